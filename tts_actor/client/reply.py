"""What a synthesis reply is to the client, and how a service error on the wire becomes a :class:`TtsError`.

Apart from the request/reply mechanics so that the inbox reader, the stream reader and the small JSON
requests read replies and raise errors the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.headers import Header
from tts_actor.wire.replies import parse_timings, parse_waveform


class NoResponders(TtsError):
    """No instance of the service is listening."""


@dataclass(frozen=True)
class SynthesisReply:
    audio: bytes
    headers: dict[str, str]
    chunks: int
    word_timings: list[dict[str, Any]] | None = None  # from the timings parts, when the request asked for words

    @property
    def backend(self) -> str:
        return self.headers[Header.BACKEND.value]

    @property
    def sample_rate(self) -> int:
        return int(self.headers[Header.SAMPLE_RATE.value])

    @property
    def duration_ms(self) -> int:
        return int(self.headers[Header.DURATION_MS.value])

    @property
    def content_type(self) -> str:
        return self.headers.get(Header.CONTENT_TYPE.value, "")

    @property
    def request_id(self) -> str:
        return self.headers.get(Header.REQUEST_ID.value, "")

    @property
    def timings(self) -> list[dict[str, Any]]:
        """``[{index, text_start, text_end, start_ms, end_ms}]``: where each segment is spoken.

        With ``timings="word"`` each entry also has ``words: [{text_start, text_end, start_ms, end_ms}]``, or
        ``timings_unavailable`` (why the engine gave none): read from the reply's timings parts.
        """
        return self.word_timings if self.word_timings is not None else parse_timings(self.headers)

    @property
    def waveform(self) -> bytes | None:
        """``waveform_points`` bytes, each the peak (0-255) of its slice of the audio: what a chat app draws."""
        return parse_waveform(self.headers)

    @property
    def synthetic(self) -> bool:
        """The service says the audio is synthetic speech (``Tts-Synthetic``)."""
        return self.headers.get(Header.SYNTHETIC.value) == "true"


def raise_for_error(headers: dict[str, str] | None, data: bytes) -> None:
    """Raise the service's error carried by a reply (or the server's "no responders"); return on any other."""
    headers = headers or {}
    if headers.get("Status") == "503":
        raise NoResponders(
            ErrorCode.BACKEND_NOT_READY,
            "no tts service instance is listening",
            "Start one with `tts-actor serve`, or check NATS_URL.",
        )
    if Header.SERVICE_ERROR_CODE.value in headers:
        try:
            raise TtsError.from_dict(json.loads(data))
        except (ValueError, KeyError):
            raise TtsError(
                ErrorCode.INTERNAL, headers.get(Header.SERVICE_ERROR.value, "service error"), "See the service log."
            ) from None
