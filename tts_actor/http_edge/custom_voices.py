"""OpenAI's custom-voice API on the edge: ``/v1/audio/voice_consents`` and ``/v1/audio/voices``.

Each route reads the upload as the openai SDK sends it (multipart, or JSON for a rename), checks its
limits here, and asks the fleet over NATS (``tts.consents.*``, ``tts.voices.create``/``delete``) on
behalf of the caller's API key: the request carries ``Tts-Caller: http:<key id>``, so each key sees
only its own consents. The answers are OpenAI's objects (:mod:`.custom_voice_compat`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tts_actor.client.tts_client import TtsClient
from tts_actor.errors import ErrorCode, TtsError, invalid
from tts_actor.http_edge.access_log import error_reply, log_request, mark_started
from tts_actor.http_edge.body import read_body, read_form
from tts_actor.http_edge.custom_voice_compat import (
    consent_deleted,
    page_query,
    voice_deleted,
    voice_object,
)
from tts_actor.http_edge.middleware import http_caller
from tts_actor.wire.consent_requests import MAX_RECORDING_BYTES, check_recording

UPLOAD_LIMIT = MAX_RECORDING_BYTES + 64 * 1024  # the file and the form's other fields
CONSENT_FIX = "Send multipart/form-data with 'name', 'language' (BCP-47) and 'recording' (audio, at most 10 MiB)."
VOICE_FIX = "Send multipart/form-data with 'name', 'consent' (a consent id) and 'audio_sample' (mono 16-bit WAV)."
NATS_OVERHEAD = 4096  # the JSON around the base64 audio, and the headers


class CustomVoiceRoutes:
    """The routes; ``client`` is read per request (the edge has it once started)."""

    def __init__(self, client: Callable[[], TtsClient]) -> None:
        self._client = client

    async def create_consent(self, request: Request) -> Response:
        async def work(caller: str) -> dict[str, Any]:
            form = await read_form(request, UPLOAD_LIMIT, CONSENT_FIX)
            name, language = _text(form, "name", CONSENT_FIX), _text(form, "language", CONSENT_FIX)
            recording = check_recording(await _file(form, "recording", CONSENT_FIX))
            self._fits(recording)
            return await self._client().create_consent(recording, name, language, caller=caller)

        return await _answer(request, work)

    async def list_consents(self, request: Request) -> Response:
        async def work(caller: str) -> dict[str, Any]:
            after, limit = page_query(request.query_params)
            return await self._client().list_consents(after, limit, caller=caller)

        return await _answer(request, work)

    async def consent(self, request: Request) -> Response:
        consent_id = request.path_params["consent_id"]
        return await _answer(request, lambda caller: self._client().consent(consent_id, caller=caller))

    async def rename_consent(self, request: Request) -> Response:
        async def work(caller: str) -> dict[str, Any]:
            body = await read_body(request, 64 * 1024, 'Send {"name": "..."}.')
            try:
                name = json.loads(body).get("name")
            except (ValueError, AttributeError, RecursionError):
                raise invalid('the body must be a JSON object: {"name": "..."}') from None
            return await self._client().rename_consent(request.path_params["consent_id"], name, caller=caller)

        return await _answer(request, work)

    async def delete_consent(self, request: Request) -> Response:
        async def work(caller: str) -> dict[str, Any]:
            return consent_deleted(await self._client().delete_consent(request.path_params["consent_id"], caller))

        return await _answer(request, work)

    async def create_voice(self, request: Request) -> Response:
        async def work(caller: str) -> dict[str, Any]:
            form = await read_form(request, UPLOAD_LIMIT, VOICE_FIX)
            kind = form.get("type")
            if kind not in (None, "audio_sample"):
                raise invalid("only voices from an audio sample are served here ('type': 'audio_sample')", VOICE_FIX)
            name = _text(form, "name", VOICE_FIX)
            consent = _text(form, "consent", VOICE_FIX)
            sample = await _file(form, "audio_sample", VOICE_FIX)
            self._fits(sample)
            created = await self._client().create_voice(sample, consent=consent, name=name, caller=caller)
            return voice_object(created)

        return await _answer(request, work)

    async def delete_voice(self, request: Request) -> Response:
        async def work(caller: str) -> dict[str, Any]:
            voice_id = request.path_params["voice_id"]
            return voice_deleted(voice_id, await self._client().delete_voice(voice_id, caller=caller))

        return await _answer(request, work)

    def _fits(self, audio: bytes) -> None:
        """A file the NATS server cannot carry is refused here, with what to change, not as a failed publish."""
        room = self._client().nc.max_payload
        if (len(audio) + 2) // 3 * 4 + NATS_OVERHEAD > room:
            raise TtsError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the file is {len(audio)} bytes; the NATS server carries at most {room} bytes per message",
                "Send a shorter recording, or raise max_payload on the NATS server and TTS_MAX_REQUEST_BYTES.",
            )


async def _answer(request: Request, work: Callable[[str], Awaitable[dict[str, Any]]]) -> Response:
    """Run ``work`` for this caller; its answer as JSON, or OpenAI's error shape."""
    mark_started(request)
    caller = http_caller(request)
    try:
        body = await work(caller)
    except TtsError as error:
        return error_reply(error, request)
    log_request(request, 200, "ok")
    return JSONResponse(body)


def _text(form: FormData, key: str, fix: str) -> str:
    value = form.get(key)
    if not isinstance(value, str):
        raise TtsError(ErrorCode.INVALID_REQUEST, f"'{key}' (a text field) is required", fix, detail={"param": key})
    return value


async def _file(form: FormData, key: str, fix: str) -> bytes:
    value = form.get(key)
    if not isinstance(value, UploadFile):
        raise TtsError(ErrorCode.INVALID_REQUEST, f"'{key}' (a file) is required", fix, detail={"param": key})
    return await value.read()
