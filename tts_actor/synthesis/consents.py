"""Consent records: a speaker's recorded agreement to be cloned, kept in a JetStream Object Store bucket.

Each record holds the recording, its BCP-47 language, a label, when and who made it (the caller identity
of :mod:`tts_actor.wire.caller`). A caller sees only its own records: another's id reads exactly like one
that does not exist, and a listing holds only its own. ``owner=None`` (the operator's subjects) sees all.
Replicated like the voice profiles (``TTS_JS_REPLICAS``), so every instance reads the same records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.audio_cache import meta_subject
from tts_actor.synthesis.object_stores import open_object_store
from tts_actor.wire.consent_requests import CONSENT_ID_RE, CONSENT_PREFIX, ConsentPage, NewConsent

log = get_logger(__name__)
ID_BYTES = 24  # 32 url-safe characters after the prefix: 192 random bits


@dataclass(frozen=True)
class Consent:
    id: str
    name: str
    language: str
    created_at: int  # Unix seconds
    owner: str
    recording_bytes: int = 0

    def public(self) -> dict[str, Any]:
        """OpenAI's ``audio.voice_consent`` object (the owner is the service's business, not the caller's)."""
        return {
            "id": self.id,
            "object": "audio.voice_consent",
            "name": self.name,
            "language": self.language,
            "created_at": self.created_at,
        }

    def meta(self) -> str:
        fields = {"name": self.name, "language": self.language, "created_at": self.created_at, "owner": self.owner}
        return json.dumps(fields)

    @classmethod
    def from_info(cls, info: ObjectInfo) -> Consent:
        meta = json.loads(info.description or "{}")
        return cls(
            id=info.name,
            name=str(meta.get("name", "")),
            language=str(meta.get("language", "")),
            created_at=int(meta.get("created_at") or 0),
            owner=str(meta.get("owner", "")),
            recording_bytes=int(info.size or 0),
        )


def unknown_consent() -> TtsError:
    return TtsError(
        ErrorCode.UNKNOWN_VOICE,
        "no such voice consent",
        "Use an id that tts.consents.create (or POST /v1/audio/voice_consents) answered you; deleted ones are gone.",
        detail={"param": "consent_id"},
    )


def unavailable(exc: BaseException) -> TtsError:
    return TtsError(
        ErrorCode.INTERNAL,
        f"voice consents are unavailable: {type(exc).__name__}",
        "Consent records need JetStream on the NATS server (nats-server -js); retry when it is back.",
        retry_after_ms=1000,
    )


class ConsentStore:
    """Create, read, rename, list and delete consent records in ``TTS_CONSENTS_BUCKET``."""

    def __init__(self, nc: Client, settings: Settings, timeout_s: float = 5.0) -> None:
        self.nc = nc
        self.bucket = settings.consents_bucket
        self.replicas = settings.js_replicas
        self.timeout_s = timeout_s
        self._store: ObjectStore | None = None

    async def _open(self) -> ObjectStore:
        if self._store is None:
            self._store = await open_object_store(
                self.nc, self.bucket, "tts-actor voice consent records", self.replicas, self.timeout_s
            )
        return self._store

    def _failed(self, exc: BaseException) -> TtsError:
        self._store = None
        log.warning("consent_store_failed", error=repr(exc))
        return unavailable(exc)

    async def create(self, new: NewConsent, owner: str) -> Consent:
        consent = Consent(
            id=CONSENT_PREFIX + secrets.token_urlsafe(ID_BYTES),
            name=new.name,
            language=new.language,
            created_at=int(time.time()),
            owner=owner,
            recording_bytes=len(new.recording),
        )
        try:
            store = await self._open()
            meta = ObjectMeta(name=consent.id, description=consent.meta())
            await asyncio.wait_for(store.put(consent.id, new.recording, meta=meta), self.timeout_s)
        except Exception as exc:
            raise self._failed(exc) from None
        return consent

    async def get(self, consent_id: str, owner: str | None) -> Consent:
        """The record, when ``owner`` made it (``None``: whoever did); else ``unknown_voice``."""
        if not CONSENT_ID_RE.match(consent_id):
            raise unknown_consent()
        try:
            store = await self._open()
            info = await asyncio.wait_for(store.get_info(consent_id), self.timeout_s)
        except (ObjectNotFoundError, NotFoundError):
            raise unknown_consent() from None
        except Exception as exc:
            raise self._failed(exc) from None
        consent = Consent.from_info(info)
        if info.deleted or (owner is not None and consent.owner != owner):
            raise unknown_consent()
        return consent

    async def rename(self, consent_id: str, name: str, owner: str | None) -> Consent:
        consent = await self.get(consent_id, owner)
        renamed = dataclasses.replace(consent, name=name)
        try:
            store = await self._open()
            await asyncio.wait_for(
                store.update_meta(consent_id, ObjectMeta(name=consent_id, description=renamed.meta())), self.timeout_s
            )
        except Exception as exc:
            raise self._failed(exc) from None
        return renamed

    async def list(self, page: ConsentPage, owner: str | None) -> tuple[list[Consent], bool]:
        """A page of ``owner``'s records (``None``: everyone's), newest first; and whether more follow."""
        try:
            store = await self._open()
            infos = await asyncio.wait_for(store.list(ignore_deletes=True), self.timeout_s)
        except NotFoundError:  # an empty bucket
            infos = []
        except Exception as exc:
            raise self._failed(exc) from None
        records = [Consent.from_info(info) for info in infos if not info.deleted]
        mine = sorted(
            (c for c in records if owner is None or c.owner == owner), key=lambda c: (c.created_at, c.id), reverse=True
        )
        start = 0
        if page.after is not None:
            ids = [c.id for c in mine]
            start = ids.index(page.after) + 1 if page.after in ids else len(mine)
        chosen = mine[start : start + page.limit]
        return chosen, start + page.limit < len(mine)

    async def delete(self, consent_id: str, owner: str | None) -> Consent:
        """Remove the record, its recording and its metadata (no tombstone); ``unknown_voice`` when not ``owner``'s."""
        consent = await self.get(consent_id, owner)
        try:
            store = await self._open()
            await asyncio.wait_for(store.delete(consent_id), self.timeout_s)
            # the delete keeps a meta message with the description (the speaker's name, the owner): purge it too
            js = self.nc.jetstream(timeout=self.timeout_s)
            await js.purge_stream(f"OBJ_{self.bucket}", subject=meta_subject(self.bucket, consent_id))
        except (ObjectNotFoundError, NotFoundError):
            raise unknown_consent() from None
        except Exception as exc:
            raise self._failed(exc) from None
        return consent
