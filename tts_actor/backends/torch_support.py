"""What the torch-based adapters share: device choice, seeding, tensors to PCM, freeing memory.

torch is imported lazily inside each function, so importing this module costs
nothing on hosts without the torch extras.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator
from typing import Any

from statemachine import Reason
from tts_actor.backends.base import BackendFailure, BackendSpec, Device


def pick_device(spec: BackendSpec) -> str:
    """``cuda`` when the spec wants it and it is there; ``cpu`` otherwise, or a failure if CUDA is required."""
    import torch

    if spec.device is Device.CPU:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if spec.device is Device.CUDA_REQUIRED:
        raise BackendFailure(
            Reason.LOAD_ERROR,
            f"{spec.name}: needs a CUDA GPU (about {spec.approx_memory_mb} MB) and none is visible to torch",
            f"Run on a host with an NVIDIA GPU and a CUDA build of torch, or remove {spec.name} from TTS_BACKENDS.",
        )
    return "cpu"


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Make sampling repeatable for one call when a seed is given, leaving the global RNG as it was."""
    if seed is None:
        yield
        return
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def to_numpy(samples: Any) -> Any:
    """A torch tensor (any device, any leading batch dims) or array-like to a flat float32 numpy array."""
    import numpy as np

    if hasattr(samples, "detach"):
        samples = samples.detach().to("cpu").float().numpy()
    return np.asarray(samples, dtype=np.float32).reshape(-1)


def release_memory() -> None:
    """After an adapter dropped its references: collect, and hand cached CUDA blocks back to the driver."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
