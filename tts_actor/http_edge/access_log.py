"""One structured log line per HTTP request, and a service error as OpenAI's error body.

uvicorn's access log is off (see :mod:`.app`): the routes log here instead, with the
error code and the time since the request arrived, so every route answers alike.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from tts_actor.errors import TtsError
from tts_actor.http_edge.openai_compat import error_response
from tts_actor.observability.logs import get_logger

log = get_logger(__name__)


def mark_started(request: Request) -> None:
    """Note when the request arrived, for the log line's ``ms``."""
    request.scope.setdefault("state", {})["started"] = time.perf_counter()


def log_request(request: Request, status: int, code: str, **extra: Any) -> None:
    """The ``http_request`` event: method, path, status, code and, when known, the time taken."""
    started = request.scope.get("state", {}).get("started")
    ms = round((time.perf_counter() - started) * 1000, 1) if started else None
    log.info("http_request", method=request.method, path=request.url.path, status=status, code=code, ms=ms, **extra)


def error_reply(error: TtsError, request: Request) -> JSONResponse:
    """The HTTP status, headers and body OpenAI's SDKs expect for ``error``; logged."""
    status, headers, body = error_response(error)
    log_request(request, status, error.code.value)
    return JSONResponse(body, status, headers=headers)
