"""The client's small requests: status, voices, health, voice profiles, consents, detection, control and cancel.

Each is one NATS request with a JSON reply and a short fixed timeout, nothing like synthesis's inbox, stall
timer and retries; kept apart so :mod:`tts_actor.client.tts_client` is about synthesis. A mixin, since every
one of them is a method callers know on :class:`~tts_actor.client.tts_client.TtsClient`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from tts_actor.client.reply import NoResponders, raise_for_error
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.observability.tracing import inject_headers
from tts_actor.wire.caller import CALLER_HEADER
from tts_actor.wire.subjects import Subjects

CANCEL_WAIT_S = 1.0  # a found cancel is answered within a round trip; silence this long means no instance has it
CANCEL_NOT_FOUND = "not found on any instance"


class ServiceQueries:
    """JSON requests on the service's subjects; the class using it supplies ``nc``, ``prefix``, ``_ctl_timeout_s``."""

    nc: Client
    prefix: str
    _ctl_timeout_s: float

    def subject(self, *parts: str) -> str:
        return Subjects(self.prefix).subject(*parts)

    async def _request_json(self, subject: str, payload: bytes = b"", caller: str | None = None) -> dict[str, Any]:
        """``caller`` (``Tts-Caller``): whom, below this connection's NATS user, the request is for (the HTTP edge)."""
        headers = inject_headers()
        if caller is not None:
            headers[CALLER_HEADER] = caller
        try:
            msg = await self.nc.request(subject, payload, timeout=self._ctl_timeout_s, headers=headers)
        except NatsTimeoutError:
            raise TtsError(
                ErrorCode.INTERNAL,
                f"no reply on {subject} within {self._ctl_timeout_s} s",
                "Check that the service runs and NATS_URL points at its server.",
            ) from None
        except Exception as exc:
            if type(exc).__name__ == "NoRespondersError":
                raise NoResponders(
                    ErrorCode.BACKEND_NOT_READY,
                    f"no service listens on {subject}",
                    "Start one with `tts-actor serve`, or check NATS_URL.",
                ) from None
            raise
        raise_for_error(msg.headers, msg.data)
        return json.loads(msg.data)

    async def status(self) -> dict[str, Any]:
        return await self._request_json(self.subject("status"))

    async def voices(self, profiles: bool = False) -> dict[str, Any]:
        """The engines' voices; ``profiles``: also how many voice profiles there are and which lack a consent."""
        return await self._request_json(self.subject("voices"), b'{"profiles": true}' if profiles else b"")

    async def health(self) -> dict[str, Any]:
        return await self._request_json(self.subject("health"))

    async def create_voice(
        self,
        reference_audio: bytes,
        reference_text: str | None = None,
        language: str | None = None,
        *,
        consent: str | None = None,
        name: str | None = None,
        caller: str | None = None,
    ) -> dict[str, Any]:
        """Store a reference clip as a voice profile; the reply's ``voice_profile`` is its id (keep it private).

        ``consent``: the id of the speaker's consent record (:meth:`create_consent`), required by default.
        """
        body: dict[str, Any] = {"reference_audio": base64.b64encode(reference_audio).decode()}
        for key, value in (("reference_text", reference_text), ("language", language), ("consent", consent)):
            if value is not None:
                body[key] = value
        if name is not None:
            body["name"] = name
        return await self._request_json(self.subject("voices", "create"), json.dumps(body).encode(), caller)

    async def delete_voice(self, profile_id: str, caller: str | None = None) -> dict[str, Any]:
        payload = json.dumps({"voice_profile": profile_id}).encode()
        return await self._request_json(self.subject("voices", "delete"), payload, caller)

    async def create_consent(
        self, recording: bytes, name: str, language: str, caller: str | None = None
    ) -> dict[str, Any]:
        """Record that a speaker agreed to be cloned; the reply is OpenAI's ``audio.voice_consent`` object."""
        body = {"name": name, "language": language, "recording": base64.b64encode(recording).decode()}
        return await self._request_json(self.subject("consents", "create"), json.dumps(body).encode(), caller)

    async def consent(self, consent_id: str, caller: str | None = None) -> dict[str, Any]:
        payload = json.dumps({"id": consent_id}).encode()
        return await self._request_json(self.subject("consents", "get"), payload, caller)

    async def rename_consent(self, consent_id: str, name: str, caller: str | None = None) -> dict[str, Any]:
        payload = json.dumps({"id": consent_id, "name": name}).encode()
        return await self._request_json(self.subject("consents", "update"), payload, caller)

    async def list_consents(
        self, after: str | None = None, limit: int | None = None, caller: str | None = None, every_caller: bool = False
    ) -> dict[str, Any]:
        """A page of this caller's records; ``every_caller``: everyone's (the operator's subject)."""
        body: dict[str, Any] = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
        subject = self.subject("consents", "admin", "list") if every_caller else self.subject("consents", "list")
        return await self._request_json(subject, json.dumps(body).encode(), caller)

    async def delete_consent(
        self, consent_id: str, caller: str | None = None, every_caller: bool = False
    ) -> dict[str, Any]:
        """Delete a record and every voice made under it; ``every_caller``: anyone's (the operator's subject)."""
        subject = self.subject("consents", "admin", "delete") if every_caller else self.subject("consents", "delete")
        return await self._request_json(subject, json.dumps({"id": consent_id}).encode(), caller)

    async def detect(self, audio: bytes) -> dict[str, Any]:
        """Whether an audio file (any format FFmpeg reads) carries the inaudible watermark: ``tts.detect``'s reply."""
        return await self._request_json(self.subject("detect"), audio)

    async def control(self, backend: str, action: str) -> dict[str, Any]:
        return await self._request_json(self.subject("control", backend, action))

    async def cancel(self, request_id: str, timeout_s: float = CANCEL_WAIT_S) -> dict[str, Any]:
        """Stop a request now; the serving instance's answer, or ``ok: false`` when no instance has it.

        Every instance hears ``tts.cancel`` and only the one serving the request answers, at once; so
        silence for ``timeout_s`` (or no instance listening) means it is unknown, or finished already.
        """
        payload = json.dumps({"request_id": request_id}).encode()
        try:
            msg = await self.nc.request(self.subject("cancel"), payload, timeout=timeout_s)
        except (NatsTimeoutError, NoRespondersError):
            return {"ok": False, "request_id": request_id, "error": CANCEL_NOT_FOUND}
        return json.loads(msg.data)  # type: ignore[no-any-return]

    async def _tell_cancel(self, request_id: str) -> None:
        """Cancel without waiting for the answer: for callers that are leaving anyway."""
        await self.nc.publish(self.subject("cancel"), json.dumps({"request_id": request_id}).encode())
        await self.nc.flush()
