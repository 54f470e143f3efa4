"""Reply and request headers: the names every edge and client agree on."""

from __future__ import annotations

import enum


class Header(enum.StrEnum):
    """Reply headers that carry the audio's metadata."""

    CONTENT_TYPE = "Content-Type"
    BACKEND = "Tts-Backend"
    VOICE = "Tts-Voice"
    LANGUAGE = "Tts-Language"
    SAMPLE_RATE = "Tts-Sample-Rate"
    DURATION_MS = "Tts-Duration-Ms"
    CHUNK_INDEX = "Tts-Chunk-Index"
    CHUNK_COUNT = "Tts-Chunk-Count"
    TOTAL_BYTES = "Tts-Total-Bytes"
    FALLBACK_FROM = "Tts-Fallback-From"
    REQUEST_ID = "Tts-Request-Id"  # first message; on a request, the id the caller wants for tts.cancel
    SEGMENT_INDEX = "Tts-Segment-Index"
    SEGMENT_START_MS = "Tts-Segment-Start-Ms"
    SEGMENT_END_MS = "Tts-Segment-End-Ms"
    SEGMENT_COUNT = "Tts-Segment-Count"
    TIMINGS = "Tts-Timings"  # JSON [{index, text_start, text_end, start_ms, end_ms}]
    TIMINGS_PART = "Tts-Timings-Part"  # "<index>/<count>": a part of the word timings JSON (Tts-Status: timings)
    STREAM_END = "Tts-Stream-End"  # on the empty-body message that ends a stream
    FIRST_AUDIO_MS = "Tts-First-Audio-Ms"
    STATUS = "Tts-Status"  # status messages (acks, heartbeats) that carry no audio: accepted | working
    HEARTBEAT_MS = "Tts-Heartbeat-Ms"  # on a request: ack it and send a heartbeat every this many ms
    DEADLINE = "Tts-Deadline"  # on a request: unix epoch ms when the caller stops caring (wire/deadlines.py)
    SENT_AT = "Tts-Sent-At"  # on a request: unix epoch ms when this attempt was sent
    WAVEFORM = "Tts-Waveform"  # whole reply, a stream's end: base64 of waveform_points peaks, 0-255 each
    SYNTHETIC = "Tts-Synthetic"  # every audio reply: "true" (EU AI Act Art. 50(2): machine-readable marking)
    CACHE = "Tts-Cache"  # first message (and a stream's end): hit, miss, bypass or joined
    WATERMARK = "Tts-Watermark"  # first message: "perth" when the audio carries the inaudible PerthNet mark
    ERROR_CODE = "Tts-Error-Code"
    SERVICE_ERROR = "Nats-Service-Error"
    SERVICE_ERROR_CODE = "Nats-Service-Error-Code"
