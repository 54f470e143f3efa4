"""The backend adapters, by name, in the default priority order."""

from __future__ import annotations

from tts_actor.backends.base import BackendAdapter, BackendFailure, BackendSpec, Device, ModelRef, Voice
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.backends.higgs import HiggsAudioBackend
from tts_actor.backends.mms import MmsBackend
from tts_actor.backends.piper import PiperBackend
from tts_actor.backends.xtts import XttsBackend

ADAPTERS: dict[str, type[BackendAdapter]] = {
    "piper": PiperBackend,
    "chatterbox": ChatterboxBackend,
    "mms": MmsBackend,
    "xtts": XttsBackend,
    "higgs": HiggsAudioBackend,
}

__all__ = ["ADAPTERS", "BackendAdapter", "BackendFailure", "BackendSpec", "Device", "ModelRef", "Voice"]
