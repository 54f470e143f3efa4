"""The ``tts.consents.*`` and ``tts.voices.create``/``delete`` endpoints: parse, name the caller, answer.

The caller is the user its reply inbox names, or the account a service import came from
(:mod:`tts_actor.wire.caller`); the operator's subjects
(``tts.consents.admin.*``, which the shipped roles grant the operator alone) act on every caller's records.
What each does is :class:`tts_actor.synthesis.custom_voices.CustomVoices`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from nats.micro.request import Request

from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.respond import respond_error
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.custom_voices import CustomVoices
from tts_actor.synthesis.profiles import parse_create_request, parse_profile_id
from tts_actor.wire.caller import caller_identity
from tts_actor.wire.consent_requests import (
    parse_consent_create,
    parse_consent_id,
    parse_consent_page,
    parse_consent_update,
)

log = get_logger(__name__)
Handler = Callable[[Request], Awaitable[None]]


def caller(req: Request) -> str:
    """The identity whose records this request may touch."""
    msg = req._msg  # nats.micro keeps the message; its reply subject is what names the caller
    return caller_identity(msg.reply, req.headers)


class CustomVoiceEndpoints:
    """One handler per subject; each answers JSON, or the structured error."""

    def __init__(self, voices: CustomVoices, settings: Settings, max_payload: Callable[[], int]) -> None:
        self.voices = voices
        self.settings = settings
        self._max_payload = max_payload

    def handlers(self) -> dict[str, Handler]:
        """Endpoint name (as :meth:`tts_actor.wire.subjects.Subjects.endpoints` names it) -> handler."""
        return {
            "voices_create": self._answer(self._voice_create),
            "voices_delete": self._answer(self._voice_delete),
            "consents_create": self._answer(self._consent_create),
            "consents_get": self._answer(self._consent_get),
            "consents_update": self._answer(self._consent_update),
            "consents_list": self._answer(self._consent_list),
            "consents_delete": self._answer(self._consent_delete),
            "consents_admin_list": self._answer(self._admin_list),
            "consents_admin_delete": self._answer(self._admin_delete),
        }

    def _answer(self, work: Callable[[Request], Awaitable[dict[str, Any]]]) -> Handler:
        async def handle(req: Request) -> None:
            try:
                body = await work(req)
            except TtsError as error:
                await respond_error(req, error, self._max_payload())
                return
            except Exception as exc:  # never leave a caller without an answer
                log.exception("custom_voice_endpoint_failed", subject=req.subject)
                message = f"{req.subject} failed: {type(exc).__name__}"
                error = TtsError(ErrorCode.INTERNAL, message, "See the service log.")
                await respond_error(req, error, self._max_payload())
                return
            await req.respond(json.dumps(body).encode(), headers={"Content-Type": "application/json"})

        return handle

    async def _voice_create(self, req: Request) -> dict[str, Any]:
        new = parse_create_request(req.data, self.settings)
        return (await self.voices.create_voice(new, caller(req))).public()

    async def _voice_delete(self, req: Request) -> dict[str, Any]:
        return {"deleted": await self.voices.delete_voice(parse_profile_id(req.data), caller(req))}

    async def _consent_create(self, req: Request) -> dict[str, Any]:
        new = parse_consent_create(req.data, self.settings.max_request_bytes)
        return (await self.voices.create_consent(new, caller(req))).public()

    async def _consent_get(self, req: Request) -> dict[str, Any]:
        return (await self.voices.consents.get(parse_consent_id(req.data), caller(req))).public()

    async def _consent_update(self, req: Request) -> dict[str, Any]:
        consent_id, name = parse_consent_update(req.data)
        return (await self.voices.consents.rename(consent_id, name, caller(req))).public()

    async def _consent_list(self, req: Request) -> dict[str, Any]:
        return await self.voices.consent_page(parse_consent_page(req.data), caller(req))

    async def _consent_delete(self, req: Request) -> dict[str, Any]:
        return await self._delete(parse_consent_id(req.data), caller(req))

    async def _admin_list(self, req: Request) -> dict[str, Any]:
        return await self.voices.consent_page(parse_consent_page(req.data), None)

    async def _admin_delete(self, req: Request) -> dict[str, Any]:
        return await self._delete(parse_consent_id(req.data), None)

    async def _delete(self, consent_id: str, owner: str | None) -> dict[str, Any]:
        consent, voices = await self.voices.delete_consent(consent_id, owner)
        return {"id": consent.id, "object": "audio.voice_consent", "deleted": True, "voices_deleted": voices}
