"""The reply formats a caller may ask for, and which rates and bitrates each takes.

Kept apart from the encoders so that request validation (:mod:`tts_actor.wire.messages`)
can check a format without loading PyAV: the table is data, the encoders are work.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
OPUS_RATES = (8000, 16000, 24000, 48000)  # libopus' own input rates; Ogg Opus always decodes at 48 kHz


@dataclass(frozen=True)
class FormatInfo:
    """What a caller may ask of a format."""

    content_type: str
    rates: tuple[int, ...]
    default_bitrate: int | None = None  # None: lossless, no bitrate
    bitrate_range: tuple[int, int] | None = None
    default_rate: int | None = None  # None: the engine's own rate


FORMATS: dict[str, FormatInfo] = {
    "wav": FormatInfo("audio/wav", SAMPLE_RATES),
    "pcm": FormatInfo("audio/L16", SAMPLE_RATES),
    # the predecessor's voice-message default: Ogg Opus, mono, 32 kbit/s, tuned for voice
    "opus": FormatInfo("audio/ogg; codecs=opus", OPUS_RATES, 32_000, (6_000, 256_000)),
    "mp3": FormatInfo("audio/mpeg", SAMPLE_RATES, 64_000, (8_000, 320_000)),
    "aac": FormatInfo("audio/aac", SAMPLE_RATES, 64_000, (16_000, 320_000)),
    "flac": FormatInfo("audio/flac", SAMPLE_RATES),
    # beside OpenAI's six: what iOS/Safari (MP4) and browsers' MediaSource (both) play natively
    "m4a": FormatInfo("audio/mp4", SAMPLE_RATES, 64_000, (16_000, 320_000)),
    "webm": FormatInfo("audio/webm; codecs=opus", OPUS_RATES, 32_000, (6_000, 256_000)),
}


def check_format(fmt: str, sample_rate: int | None, bitrate: int | None) -> str | None:
    """None when the combination is offered, else a sentence naming what is."""
    info = FORMATS[fmt]
    if sample_rate is not None and sample_rate not in info.rates:
        return f"format {fmt} takes sample_rate {', '.join(map(str, info.rates))}, not {sample_rate}"
    if bitrate is not None:
        if info.bitrate_range is None:
            lossy = ", ".join(f for f, i in FORMATS.items() if i.bitrate_range)
            return f"format {fmt} is lossless and takes no bitrate; bitrate applies to {lossy}"
        low, high = info.bitrate_range
        if not low <= bitrate <= high:
            return f"format {fmt} takes bitrate {low} to {high} bit/s, not {bitrate}"
    return None


def output_rate(fmt: str, engine_rate: int, requested: int | None) -> int:
    """The rate the file will have: the request's, else the format's default, else the engine's own."""
    info = FORMATS[fmt]
    if requested is not None:
        return requested
    if info.default_rate is not None:
        return info.default_rate
    # the engine's rate, or the next one up the format takes (Opus: 22050 -> 24000, the whole band, less work)
    return min((rate for rate in info.rates if rate >= engine_rate), default=max(info.rates))


def content_type(fmt: str, rate: int) -> str:
    base = FORMATS[fmt].content_type
    return f"{base};rate={rate};channels=1" if fmt == "pcm" else base
