"""Reference audio for voice cloning, handed to an engine as a private temp file (checked in audio.reference).

The engines want a path; the request carries bytes. A server path is never
accepted from a caller: the file is written here, readable by this process only,
and deleted when the call returns, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tts_actor.audio.reference import validate_reference

__all__ = ["reference_wav_file", "validate_reference"]


@contextlib.contextmanager
def reference_wav_file(data: bytes | None) -> Iterator[Path | None]:
    """Yield a private temp WAV of the validated reference (or None without one); deleted afterwards."""
    if data is None:
        yield None
        return
    audio = validate_reference(data)
    fd, name = tempfile.mkstemp(prefix="tts-reference-", suffix=".wav")  # mode 0600
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(audio.to_wav())
        yield path
    finally:
        path.unlink(missing_ok=True)
