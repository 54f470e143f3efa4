"""Reading a request body within a limit: refused past it before the rest is read, and multipart forms from it.

Shared by the speech route (JSON) and the custom-voice routes (OpenAI's multipart uploads), so every
route refuses an oversized or trickled body the same way.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from tts_actor.errors import ErrorCode, TtsError, invalid

MAX_FORM_FIELDS = 8
MAX_FIELD_BYTES = 64 * 1024  # a text field of a form (a name, an id): files have their own limits


async def read_body(request: Request, limit: int, fix: str) -> bytes:
    """The body, refused (``payload_too_large``) past ``limit`` bytes before it is all read."""
    too_large = TtsError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body over {limit} bytes", fix)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    data = bytearray()
    try:
        async for part in request.stream():
            data += part
            if len(data) > limit:
                raise too_large
    except ClientDisconnect:  # gone, or dropped for sending too slowly (guard.py): nobody reads an answer
        raise TtsError(
            ErrorCode.INVALID_REQUEST,
            "the connection closed before the request body was complete",
            "Send the whole body promptly; the server's limit is TTS_HTTP_BODY_TIMEOUT_S.",
        ) from None
    return bytes(data)


async def read_form(request: Request, limit: int, fix: str) -> FormData:
    """A ``multipart/form-data`` body of at most ``limit`` bytes, a few fields, each text field small."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid("send the body as multipart/form-data", fix)
    data = await read_body(request, limit, fix)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    try:
        return await Request(request.scope, replay).form(
            max_files=MAX_FORM_FIELDS, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES
        )
    except Exception as exc:  # starlette's MultiPartException, or a malformed body
        raise invalid(f"the multipart body cannot be read: {str(exc)[:200]}", fix) from None
