"""The stream reader: an async iterator over one streamed reply, chunk by chunk as the backend makes them.

Apart from :mod:`tts_actor.client.tts_client` because a stream has its own life: it may be sent again only
until its first audio reaches the caller, its stall window is per message, and leaving it early (``aclose``,
``async with``) cancels the request so the backend stops at the next segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from tts_actor.client.inbox import Inbox
from tts_actor.client.reply import raise_for_error
from tts_actor.errors import TtsError
from tts_actor.wire.headers import Header
from tts_actor.wire.heartbeat import StallTimer
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.replies import ReplyKind, StreamChunk, chunk_from, classify, parse_timings, parse_waveform


class StreamHost(Protocol):
    """What a stream needs of its client (:class:`~tts_actor.client.tts_client.TtsClient`)."""

    heartbeat_ms: int | None

    def _retry_delay(self, error: TtsError, attempt: int, deadline: float) -> float | None: ...

    async def _wait_sendable(self, deadline: float) -> None: ...

    def _exchange(
        self, request: SynthesisRequest, caller_deadline_ms: int | None = None, caller: str | None = None
    ) -> AbstractAsyncContextManager[Inbox]: ...

    async def _tell_cancel(self, request_id: str) -> None: ...


class AudioStream:
    """An async iterator over one streamed reply; see :meth:`TtsClient.stream`."""

    def __init__(
        self, client: StreamHost, request: SynthesisRequest, timeout_s: float, caller: str | None = None
    ) -> None:
        self._client = client
        self._request = request
        self._caller = caller  # Tts-Caller: whom below the connection's user this is for (the audit names it)
        self._timeout_s = timeout_s
        self._exchange: AbstractAsyncContextManager[Inbox] | None = None
        self._inbox: Inbox | None = None
        self.request_id = ""
        self.headers: dict[str, str] = {}  # the first audio message's: backend, voice, content type...
        self.end_headers: dict[str, str] = {}  # the end message's: totals and timings
        self.word_timings: list[dict[str, Any]] | None = None  # from the timings parts (timings="word")
        self.ended = False
        self._attempt = 0
        self._heard = False
        # before its first audio a stream may be sent again (busy, not ready, silent responder), within this
        self._retry_deadline = time.monotonic() + timeout_s + request.wait_ms / 1000

    @property
    def timings(self) -> list[dict[str, Any]]:
        """Each segment's timing; with ``timings="word"``, each with its words (see ``SynthesisReply.timings``)."""
        return self.word_timings if self.word_timings is not None else parse_timings(self.end_headers)

    @property
    def waveform(self) -> bytes | None:
        """From the end message: ``waveform_points`` peaks (0-255) over the whole audio; None before the end."""
        return parse_waveform(self.end_headers)

    @property
    def content_type(self) -> str:
        return self.headers.get(Header.CONTENT_TYPE.value, "")

    def __aiter__(self) -> AudioStream:
        return self

    async def __aenter__(self) -> AudioStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def __anext__(self) -> StreamChunk:
        if self.ended:
            raise StopAsyncIteration
        while True:
            try:
                return await self._read()
            except StopAsyncIteration:
                raise
            except TtsError as error:
                delay = None if self.headers else self._client._retry_delay(error, self._attempt, self._retry_deadline)
                await self.aclose()
                if delay is None:
                    raise
            except BaseException:
                await self.aclose()
                raise
            await asyncio.sleep(delay)  # nothing reached the caller yet: send it again
            self._attempt += 1
            self.ended = False

    async def _open(self) -> Inbox:
        """Send the request (again, after a retry) once the link is up; its inbox stays open until ``_close``."""
        await self._client._wait_sendable(self._retry_deadline)
        self._exchange = self._client._exchange(self._request, caller=self._caller)
        self._inbox = await self._exchange.__aenter__()
        self.request_id = self._inbox.request_id
        self._heard = False
        return self._inbox

    async def _read(self) -> StreamChunk:
        inbox = self._inbox or await self._open()
        wait = self._timeout_s + (self._request.wait_ms / 1000 if not self.headers else 0)
        timer = StallTimer(wait, self._client.heartbeat_ms)
        timer.heard = self._heard
        while True:
            msg = await inbox.next(timer)
            self._heard = True
            headers = dict(msg.headers or {})
            kind = classify(headers, msg.data)
            if kind is ReplyKind.STATUS:
                continue
            if kind is ReplyKind.ERROR:  # the end message follows; nothing more to read
                self.ended = True
                raise_for_error(headers, msg.data)
            if kind is ReplyKind.END:
                self.end_headers = headers
                self.word_timings = inbox.timing_parts.result()
                self.ended = True
                await self._close()
                raise StopAsyncIteration
            if not self.headers:
                self.headers = headers
            return chunk_from(headers, msg.data)

    async def aclose(self) -> None:
        """Stop: a stream not yet ended is cancelled on ``tts.cancel``."""
        if self._exchange is not None and not self.ended:
            self.ended = True
            with contextlib.suppress(Exception):
                await self._client._tell_cancel(self.request_id)
        await self._close()

    async def _close(self) -> None:
        exchange, self._exchange = self._exchange, None
        self._inbox = None
        if exchange is not None:
            await exchange.__aexit__(None, None, None)
