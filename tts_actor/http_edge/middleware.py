"""The ASGI layers around the edge's routes: bearer auth, cut streams, JSON 404/405, and the server.

Every answer the edge gives, even for a path or method it does not know, is in OpenAI's error
shape, so an SDK shows the message and the fix instead of a plain-text ``Not Found``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterator

import uvicorn
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tts_actor.http_edge.openai_compat import auth_error

PATHS = (
    "POST /v1/audio/speech",
    "POST|GET /v1/audio/voice_consents",
    "GET|POST|DELETE /v1/audio/voice_consents/{id}",
    "POST /v1/audio/voices",
    "DELETE /v1/audio/voices/{id}",
    "GET /v1/models",
    "GET /v1/models/{model}",
    "GET /v1/audio/voices",
    "GET /healthz",
    "GET /readyz",
)


class StreamCut(Exception):
    """The audio broke off after the status was sent: the connection is closed without the last chunk."""


class CutStreams:
    """Ends the ASGI call on :class:`StreamCut` without a traceback: uvicorn then drops the connection,
    so the caller sees an incomplete body, never a short file that looks whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(StreamCut):
            await self.app(scope, receive, send)


class BearerAuth:
    """``Authorization: Bearer <key>`` on every ``/v1/`` path when keys are configured; probes stay open.

    Checked as soon as the headers are in, before any of the body is read; a refused caller's
    connection is closed (``Connection: close``), so it cannot go on to trickle a body. An accepted
    caller's key id (:func:`key_id`, never the key) goes into ``scope["state"]["api_key_id"]``: whose
    consents and voices these are.
    """

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"].startswith("/v1/"):
            header = Headers(scope=scope).get("authorization", "")
            scheme, _, token = header.partition(" ")
            problem: tuple[str, str] | None = None
            if not header:
                problem = ("missing_api_key", "no API key: send 'Authorization: Bearer <key>'")
            elif scheme.lower() != "bearer" or not self._known(token.strip().encode()):
                problem = ("invalid_api_key", "the API key is not valid")
            if problem is not None:
                headers = {"WWW-Authenticate": "Bearer", "Connection": "close", "x-should-retry": "false"}
                response = JSONResponse(auth_error(*problem), 401, headers=headers)
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["api_key_id"] = key_id(token.strip())
        await self.app(scope, receive, send)

    def _known(self, token: bytes) -> bool:
        # every key compared, in constant time each: no early exit that times which one matched
        return any([hmac.compare_digest(token, key) for key in self.keys])


def key_id(key: str) -> str:
    """A name for an API key that does not reveal it: ``key_`` and 12 hex digits of its SHA-256."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def http_caller(request: Request) -> str:
    """``http:<key id>`` (``Tts-Caller`` on its NATS requests): who sent this, as far as the edge knows."""
    return "http:" + (request.scope.get("state", {}).get("api_key_id") or "anonymous")


class EdgeServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process (``serve``/``http``) owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def http_error_json(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (and any other HTTPException) in OpenAI's error shape, not plain text."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    where = f"{request.method} {request.url.path}"
    if status == 404:
        message = f"Invalid URL ({where}): no such path"
    elif status == 405:
        message = f"Method not allowed ({where}); allowed: {(exc.headers or {}).get('Allow', '?')}"
    else:
        message = f"{exc.detail} ({where})"
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request",
            "fix": "The edge serves: " + "; ".join(PATHS),
        }
    }
    headers = dict(exc.headers or {})
    if status not in (408, 409, 429):
        headers["x-should-retry"] = "false"
    return JSONResponse(body, status, headers=headers)
