"""A tiny random MMS-style VITS model, built with transformers in about a second.

Same files as a ``facebook/mms-tts-*`` repository (config.json, weights,
vocab.json, tokenizer_config.json), so the MMS adapter loads it exactly as it
loads a real one; only the sizes are small and the weights random.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_SAMPLING_RATE = 16000
_CHARACTERS = " abcdefghijklmnopqrstuvwxyz'.,!?-"


def make_tiny_vits(path: Path) -> Path:
    """Write a tiny VITS model and its character tokenizer to ``path``; returns ``path``."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, **{ch: i + 2 for i, ch in enumerate(_CHARACTERS)}}
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = VitsTokenizer(str(vocab_file), language="eng", add_blank=True, normalize=True, phonemize=False)
    tokenizer.save_pretrained(path)

    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        window_size=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=17,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=1,
        use_stochastic_duration_prediction=True,
        sampling_rate=TINY_SAMPLING_RATE,
    )
    torch.manual_seed(0)
    VitsModel(config).eval().save_pretrained(path)
    return path
