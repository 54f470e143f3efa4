"""Voice profiles: a validated reference clip, stored once in a JetStream Object Store bucket.

``tts.voices.create`` stores the clip (with an optional transcript, language, name and the consent
record it was made under) and answers an opaque random id (``voice_...``; older profiles have a bare
32-character id); any instance of the fleet reads it from there. The id is the handle: 192 random
bits, no listing to callers, and an id that is malformed reads exactly like one that does not exist,
so nobody can find or enumerate another caller's profiles. :meth:`ProfileStore.summaries` lists the
records without their clips, for the consent cascade and the operator's report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.js.api import ObjectMeta
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from tts_actor.audio.reference import validate_reference
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError, invalid
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.audio_cache import meta_subject
from tts_actor.synthesis.object_stores import open_object_store
from tts_actor.wire.consent_requests import VOICE_PREFIX, check_name
from tts_actor.wire.messages import LANGUAGE_RE
from tts_actor.wire.request_parsing import decode_reference_audio, parse_json_object

log = get_logger(__name__)
_META = ("digest", "duration_ms", "reference_text", "language", "created_at", "name", "consent", "owner")
ID_BYTES = 24  # secrets.token_urlsafe(24): 32 characters, 192 bits
_ID_RE = re.compile(r"^(voice_)?[A-Za-z0-9_-]{32}$")  # ``voice_`` + 32; before consents: the bare 32
MAX_REFERENCE_TEXT_CHARS = 1000
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class VoiceProfile:
    id: str
    audio: bytes  # the validated clip, re-encoded as mono 16-bit WAV
    digest: str  # sha256 of ``audio``: what caches key on (never the id)
    duration_ms: int
    reference_text: str | None = None
    language: str | None = None
    created_at: str = ""
    name: str | None = None
    consent: str | None = None  # the consent record it was made under; None: made before consents, or without
    owner: str | None = None  # the caller identity that made it (tts_actor.wire.caller)

    def public(self) -> dict[str, Any]:
        """What the creator is told: the id and what was stored, not the digest nor the owner."""
        return {
            "voice_profile": self.id,
            "id": self.id,
            "object": "audio.voice",
            "name": self.name,
            "consent": self.consent,
            "duration_ms": self.duration_ms,
            "language": self.language,
            "reference_text": self.reference_text,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class ProfileSummary:
    """A stored profile without its clip: for the consent cascade and the operator's report."""

    id: str
    consent: str | None
    owner: str | None
    created_at: str


@dataclass(frozen=True)
class NewProfile:
    """A parsed ``tts.voices.create`` request."""

    audio: bytes
    reference_text: str | None = None
    language: str | None = None
    name: str | None = None
    consent: str | None = None


def unknown_profile() -> TtsError:
    return TtsError(
        ErrorCode.UNKNOWN_VOICE,
        "no such voice profile",
        "Create one with tts.voices.create and use the id it answers; deleted profiles are gone.",
    )


def unavailable(exc: BaseException) -> TtsError:
    return TtsError(
        ErrorCode.INTERNAL,
        f"voice profiles are unavailable: {type(exc).__name__}",
        "Voice profiles need JetStream on the NATS server (nats-server -js); retry when it is back.",
        retry_after_ms=1000,
    )


def parse_create_request(data: bytes, settings: Settings) -> NewProfile:
    """``{"reference_audio": base64 WAV, "reference_text"?: str, "language"?: "en"}``, every field bounded."""
    body = parse_json_object(data, settings.max_request_bytes, "Send 5-20 s of mono 16-bit WAV.")
    known = {"reference_audio", "reference_text", "language", "name", "consent"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise invalid(f"unknown fields {unknown[:5]!r}; known: {sorted(known)!r}")
    if body.get("reference_audio") is None:
        raise invalid("'reference_audio' (base64-encoded WAV) is required")
    audio = decode_reference_audio(body["reference_audio"])
    text = body.get("reference_text")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise invalid("'reference_text' must be a non-empty string: the clip's transcript")
        if len(text) > MAX_REFERENCE_TEXT_CHARS:
            raise invalid(f"'reference_text' is {len(text)} characters; the limit is {MAX_REFERENCE_TEXT_CHARS}")
        if _CONTROL.search(text):
            raise invalid("'reference_text' holds a control character or a lone surrogate")
        text = text.strip()
    language = body.get("language")
    if language is not None:
        if not isinstance(language, str) or not LANGUAGE_RE.match(language.lower()):
            raise invalid("'language' must be an ISO 639-1 code such as 'en'")
        language = language.lower()
    name = None if body.get("name") is None else check_name(body["name"])
    consent = body.get("consent")
    if consent is not None and (not isinstance(consent, str) or not 1 <= len(consent) <= 64):
        raise invalid("'consent' must be the id tts.consents.create answered")
    return NewProfile(audio, text, language, name, consent)


def parse_profile_id(data: bytes) -> str:
    """``{"voice_profile": "<id>"}`` -> the id; a malformed id is 'no such profile', like a missing one."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise invalid('request body must be JSON: {"voice_profile": "<id>"}') from None
    profile_id = body.get("voice_profile") if isinstance(body, dict) else None
    if not isinstance(profile_id, str):
        raise invalid("'voice_profile' (the id tts.voices.create answered) is required")
    return profile_id


class ProfileStore:
    """Create, get and delete profiles in the ``TTS_PROFILES_BUCKET`` object store (no listing)."""

    def __init__(self, nc: Client, settings: Settings, timeout_s: float = 5.0) -> None:
        self.nc = nc
        self.bucket = settings.profiles_bucket
        self.replicas = settings.js_replicas
        self.timeout_s = timeout_s
        self._store: ObjectStore | None = None

    async def _open(self) -> ObjectStore:
        if self._store is None:
            self._store = await open_object_store(
                self.nc, self.bucket, "tts-actor voice profiles", self.replicas, self.timeout_s
            )
        return self._store

    async def create(self, new: NewProfile, owner: str | None = None) -> VoiceProfile:
        """Validate the clip (as for ``reference_audio``) and store it under a fresh random id."""
        clip = validate_reference(new.audio)
        audio = clip.to_wav()
        profile = VoiceProfile(
            id=VOICE_PREFIX + secrets.token_urlsafe(ID_BYTES),
            audio=audio,
            digest=hashlib.sha256(audio).hexdigest(),
            duration_ms=round(clip.duration_s * 1000),
            reference_text=new.reference_text,
            language=new.language,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            name=new.name,
            consent=new.consent,
            owner=owner,
        )
        meta = {k: getattr(profile, k) for k in _META}
        try:
            store = await self._open()
            await asyncio.wait_for(
                store.put(profile.id, audio, meta=ObjectMeta(name=profile.id, description=json.dumps(meta))),
                self.timeout_s,
            )
        except Exception as exc:
            self._store = None
            log.warning("profile_store_failed", error=repr(exc))
            raise unavailable(exc) from None
        log.info("voice_profile_created", duration_ms=profile.duration_ms, language=profile.language)
        return profile

    async def get(self, profile_id: str) -> VoiceProfile:
        if not _ID_RE.match(profile_id):
            raise unknown_profile()
        try:
            store = await self._open()
            result = await asyncio.wait_for(store.get(profile_id), self.timeout_s)
        except (ObjectNotFoundError, NotFoundError):
            raise unknown_profile() from None
        except Exception as exc:
            self._store = None
            raise unavailable(exc) from None
        meta = json.loads(result.info.description or "{}")
        return VoiceProfile(
            id=profile_id,
            audio=result.data,
            digest=meta.get("digest") or hashlib.sha256(result.data).hexdigest(),
            duration_ms=int(meta.get("duration_ms") or 0),
            reference_text=meta.get("reference_text"),
            language=meta.get("language"),
            created_at=meta.get("created_at") or "",
            name=meta.get("name"),
            consent=meta.get("consent"),
            owner=meta.get("owner"),
        )

    async def exists(self, profile_id: str) -> bool:
        """Whether there is such a profile now: its metadata only, not the clip (the audit's check)."""
        if not _ID_RE.match(profile_id):
            return False
        try:
            store = await self._open()
            info = await asyncio.wait_for(store.get_info(profile_id), self.timeout_s)
        except (ObjectNotFoundError, NotFoundError):
            return False
        except Exception as exc:
            self._store = None
            raise unavailable(exc) from None
        return not info.deleted

    async def summaries(self) -> list[ProfileSummary]:
        """Every stored profile's id, consent, owner and date (not the clips): one read of the bucket's metadata."""
        try:
            store = await self._open()
            infos = await asyncio.wait_for(store.list(ignore_deletes=True), self.timeout_s)
        except NotFoundError:  # an empty bucket
            return []
        except Exception as exc:
            self._store = None
            raise unavailable(exc) from None
        result = []
        for info in infos:
            if info.deleted:
                continue
            meta = json.loads(info.description or "{}")
            result.append(ProfileSummary(info.name, meta.get("consent"), meta.get("owner"), meta.get("created_at", "")))
        return result

    async def delete(self, profile_id: str) -> bool:
        """True when there was such a profile; it is gone for every instance."""
        return await self.remove(profile_id) is not None

    async def remove(self, profile_id: str) -> str | None:
        """Delete the clip and its metadata (transcript included, no tombstone); its digest, None when unknown.

        The digest is what the caller erases next: the cached audio and the conditioning made from the clip.
        """
        if not _ID_RE.match(profile_id):
            return None
        try:
            store = await self._open()
            found = await asyncio.wait_for(store.get(profile_id), self.timeout_s)
            await asyncio.wait_for(store.delete(profile_id), self.timeout_s)
            # the delete keeps a meta message with the description (the transcript): purge its subject as well
            js = self.nc.jetstream(timeout=self.timeout_s)
            await js.purge_stream(f"OBJ_{self.bucket}", subject=meta_subject(self.bucket, profile_id))
        except (ObjectNotFoundError, NotFoundError):
            return None
        except Exception as exc:
            self._store = None
            raise unavailable(exc) from None
        log.info("voice_profile_deleted")
        return hashlib.sha256(found.data).hexdigest()  # what get() and create() key on: the stored clip's digest
