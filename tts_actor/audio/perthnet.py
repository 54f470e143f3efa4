"""PerthNet, Resemble AI's implicit neural watermark, run from the weights the ``resemble-perth`` wheel ships.

Why not ``perth.PerthImplicitWatermarker`` itself: in resemble-perth 1.0.1 its import chain needs
``pkg_resources`` (gone from setuptools >= 81), ``torchaudio`` (no build for torch 2.13; 2.11's fails to load)
and ``librosa``/``scipy`` (undeclared: the wheel lists no dependencies), so on a current environment
``perth.PerthImplicitWatermarker`` is None. The inference path is small: an STFT, a residual added to the
magnitudes under 2 kHz by the encoder, and a three-rate decoder that averages one score over the voiced frames.
This module is that path with ``torch.stft`` in place of torchaudio's wrappers (the same call underneath),
loading the wheel's checkpoint with ``strict=True``, so any change of architecture upstream fails at load.
Upstream: github.com/resemble-ai/Perth, perth/perth_net/perth_net_implicit (MIT).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "perth"  # the import name of resemble-perth
RUN = "perth_net/pretrained/implicit"
CHECKPOINT = "perth_net_250000.pth.tar"
MASK_FRACTION = 0.05  # frames quieter than this share of the loudest carry no mark (upstream ``magmask``)
HEADROOM_DB = 15.0


@dataclass(frozen=True)
class PerthParams:
    """The hparams.yaml fields inference uses."""

    sample_rate: int
    n_fft: int
    hop_size: int
    window_size: int
    hidden_size: int
    max_wmark_freq: float
    stft_magnitude_min: float

    @property
    def subband(self) -> int:
        """Frequency bins under ``max_wmark_freq``: the band the mark lives in."""
        return round((self.n_fft // 2 + 1) * self.max_wmark_freq / (self.sample_rate / 2))

    @property
    def min_db(self) -> float:
        return 20 * float(np.log10(self.stft_magnitude_min))


def package_dir(package: str = PACKAGE) -> Path | None:
    """Where resemble-perth is installed, without importing it (its ``__init__`` swallows import errors)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def read_params(path: Path) -> PerthParams:
    """``key: value`` lines of hparams.yaml (flat, scalars only), without a YAML dependency."""
    raw = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    values = {key.strip(): value.strip() for key, value in raw.items()}
    return PerthParams(
        sample_rate=int(values["sample_rate"]),
        n_fft=int(values["n_fft"]),
        hop_size=int(values["hop_size"]),
        window_size=int(values["window_size"]),
        hidden_size=int(values["hidden_size"]),
        max_wmark_freq=float(values["max_wmark_freq"]),
        stft_magnitude_min=float(values["stft_magnitude_min"]),
    )


def build(root: Path) -> PerthModel:
    """The encoder and decoder with the wheel's trained weights; torch is imported here, not at module import."""
    import torch
    from torch import nn
    from torch.nn import functional

    params = read_params(root / RUN / "hparams.yaml")

    class Conv(nn.Module):
        def __init__(self, i: int, o: int, k: int, act: bool = True) -> None:
            super().__init__()
            self.conv = nn.Conv1d(i, o, k, padding=(k - 1) // 2)
            self.act = nn.LeakyReLU() if act else None

        def forward(self, x: Any) -> Any:
            x = self.conv(x)
            return self.act(x) if self.act is not None else x

    def stack(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
        middle = [Conv(hidden, hidden, 7) for _ in range(5)]
        return nn.Sequential(Conv(inputs, hidden, 1), *middle, Conv(hidden, outputs, 1, act=False))

    sub, hidden = params.subband, params.hidden_size
    encoder = nn.Module()
    encoder.layers = stack(sub, hidden, sub)
    decoder = nn.Module()
    for branch in ("slow", "normal", "fast"):
        setattr(decoder, f"{branch}_layers", stack(sub, hidden, 2))
    net = nn.Module()
    net.encoder, net.decoder = encoder, decoder
    state = torch.load(root / RUN / CHECKPOINT, map_location="cpu", weights_only=True)["model"]
    window = state["ap.spectrogram.window"].float()
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("ap.")}, strict=True)
    net.eval()
    return PerthModel(params, net, window, torch, functional)


class PerthModel:
    """Mark float samples at ``params.sample_rate``, or score them: the upstream encode and decode, no training path."""

    def __init__(self, params: PerthParams, net: Any, window: Any, torch: Any, functional: Any) -> None:
        self.params = params
        self.net = net
        self.window = window
        self._torch = torch
        self._f = functional

    def _stft(self, signal: Any) -> tuple[Any, Any]:
        p = self.params
        window, torch = self.window, self._torch
        spec = torch.stft(signal, p.n_fft, p.hop_size, p.window_size, window, pad_mode="reflect", return_complex=True)
        magnitude_db = 20 * torch.log10(spec.abs().clip(p.stft_magnitude_min))
        return (magnitude_db - p.min_db) / (-p.min_db + HEADROOM_DB), torch.angle(spec)

    @staticmethod
    def _mask(magspec: Any) -> Any:
        energy = magspec.sum(dim=1)  # (B, T)
        return (energy > energy.max(dim=1).values[:, None] * MASK_FRACTION).float()

    def mark(self, samples: np.ndarray) -> np.ndarray:
        """The same samples with the mark added to their magnitudes under 2 kHz (phase kept)."""
        torch, p = self._torch, self.params
        with torch.inference_mode():
            signal = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
            magspec, phase = self._stft(signal)
            magspec = magspec[None].clone()
            mask = self._mask(magspec)[:, None]
            magspec[:, : p.subband] += self.net.encoder.layers(magspec[:, : p.subband]) * mask
            magnitude_db = magspec[0] * (-p.min_db + HEADROOM_DB) + p.min_db
            spec = 10.0 ** (magnitude_db / 20).clip(max=10) * torch.exp(1j * phase)
            out = torch.istft(spec, p.n_fft, p.hop_size, p.window_size, self.window, center=True, length=len(samples))
        return out.numpy()

    def score(self, samples: np.ndarray) -> float:
        """How surely the samples carry the mark, 0 to 1 (upstream ``get_watermark(round=False)``)."""
        torch = self._torch
        with torch.inference_mode():
            magspec, _ = self._stft(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))
            return float(self._decode(magspec[None]).clip(0.0, 1.0)[0])

    def _decode(self, magspec: Any) -> Any:
        torch, f, decoder = self._torch, self._f, self.net.decoder
        mask = self._mask(magspec)[:, None]
        subband = magspec[:, : self.params.subband]
        frames = subband.shape[2]
        marks, attentions = [], []
        for branch, scale in (("slow", 1.25), ("normal", 1.0), ("fast", 0.75)):
            size = int(frames * scale)
            x = subband if scale == 1.0 else f.interpolate(subband, size=size, mode="linear", align_corners=True)
            out = getattr(decoder, f"{branch}_layers")(x)  # (B, 2, T'): attention, mark
            m = f.interpolate(mask, size=out.size(2), mode="nearest")
            attentions.append((out[:, :1] * m).sum(dim=2) / m.sum(dim=2))
            marks.append((out[:, 1:] * m).sum(dim=2) / m.sum(dim=2))
        weights = f.softmax(torch.cat(attentions, dim=1), dim=1)
        return (torch.cat(marks, dim=1) * weights).sum(dim=1)
