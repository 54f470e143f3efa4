"""Slow and surplus HTTP callers dropped at the connection: uvicorn's h11 protocol with timers and a cap.

uvicorn (0.54, h11) bounds only the idle time between requests (``timeout_keep_alive``): a caller that
sends its headers or body a byte a second holds its connection for as long as it likes (measured: 50
such connections held 62 s, 3,000 with incomplete headers 30 s, none closed), and ``limit_concurrency``
only answers 503 once a request's headers are complete. This protocol adds:

- a header timer, from the connection (or the first byte of a next request) until the headers are complete;
- a body timer, from the headers until the body is complete (a total, so a 1 byte/s trickle cannot reset it);
- a cap on open connections, checked when the connection is made: the one over answers 503 and is closed.

Either timer answers ``408`` with OpenAI's error body and closes the connection. A response being
written is never timed: a long synthesis is the service's business, not a slow caller.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tts_actor.observability.logs import get_logger
from tts_actor.observability.metrics import HTTP_DROPPED

log = get_logger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 256


def _raw_response(status: str, message: str, fix: str, extra: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, in OpenAI's error shape."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_request", "fix": fix}
    if status.startswith("503"):
        error.update(type="server_error", code="busy")
    body = json.dumps({"error": error}).encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to ``limits``."""

    class Guarded(GuardedH11Protocol):
        pass

    Guarded.limits = limits
    return Guarded


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the header and body timers and the connection cap."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "headers" or "body": what the running timer waits for
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            self.transport = transport
            HTTP_DROPPED.labels("over_limit").inc()
            log.warning("http_connection_refused", open=len(self.connections), limit=self.limits.max_connections)
            transport.write(
                _raw_response(
                    "503 Service Unavailable",
                    f"too many open connections (limit {self.limits.max_connections})",
                    "Retry shortly, reuse connections (keep-alive), or raise TTS_HTTP_MAX_CONNECTIONS.",
                    ("retry-after: 1", "x-should-retry: true"),
                )
            )
            transport.close()
            return
        super().connection_made(transport)
        self._arm("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._arm("headers")  # the first byte of a next request on a kept-alive connection
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        """Move the timer with the caller's side of the exchange."""
        state = self.conn.their_state
        if state is h11.IDLE:
            return  # still waiting for headers (the timer runs), or idle between requests (uvicorn's keep-alive)
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body")
            return
        self._disarm()  # the request is in: what follows is the response

    def _arm(self, phase: str) -> None:
        self._disarm()
        timeout = self.limits.header_timeout_s if phase == "headers" else self.limits.body_timeout_s
        self._phase = phase
        self._timer = self.loop.call_later(timeout, self._expired, phase, timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _expired(self, phase: str, timeout: float) -> None:
        self._timer, self._phase = None, None
        if self.transport.is_closing():
            return
        HTTP_DROPPED.labels("header_timeout" if phase == "headers" else "body_timeout").inc()
        log.warning("http_slow_client_dropped", waiting_for=phase, timeout_s=timeout, client=_client(self.client))
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() says http.disconnect; its answer goes nowhere
            cycle.message_event.set()
        if not answered:
            setting = "TTS_HTTP_HEADER_TIMEOUT_S" if phase == "headers" else "TTS_HTTP_BODY_TIMEOUT_S"
            self.transport.write(
                _raw_response(
                    "408 Request Timeout",
                    f"the request {phase} did not arrive within {timeout:g} s",
                    f"Send the whole request at once (a proxy in front should buffer it); the limit is {setting}.",
                )
            )
        self.transport.close()


def _client(client: tuple[str, int] | None) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None
