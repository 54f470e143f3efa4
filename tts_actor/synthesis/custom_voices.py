"""Cloned voices and their consents: the one place each is created and deleted.

Every way in (``tts.consents.*``, ``tts.voices.*``, the HTTP edge through them) ends in one of four
methods here, so whatever must happen on each such event (an audit record, erasing a voice's copies)
is one line in one method. Deleting a consent deletes, through :meth:`CustomVoices.delete_voice`, every
voice made under it, and then the record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError, consent_required
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.consents import Consent, ConsentStore
from tts_actor.synthesis.profiles import NewProfile, ProfileStore, VoiceProfile
from tts_actor.wire.consent_requests import ConsentPage, NewConsent

log = get_logger(__name__)
SHOWN_ID_CHARS = 10  # the operator's report shows this much of an id: enough to tell them apart, not to use one


class Audit(Protocol):
    """What records an audit event (:meth:`tts_actor.fleet.audit.AuditTrail.record`, passed in from above)."""

    def __call__(self, action: str, actor: str | None, subject_id: str, **fields: Any) -> Awaitable[object]: ...


async def _no_audit(action: str, actor: str | None, subject_id: str, **fields: Any) -> None:
    return None


class CustomVoices:
    """Consent records and the voice profiles made under them, with the rule that ties the two.

    ``erase``: how a voice is deleted (the fleet's erasure: clip, cached audio, every instance's conditioning;
    by default the profile store's own delete); ``audit``: where each create and delete is recorded.
    """

    def __init__(
        self,
        profiles: ProfileStore,
        consents: ConsentStore,
        settings: Settings,
        erase: Callable[[str], Awaitable[bool]] | None = None,
        audit: Audit | None = None,
    ) -> None:
        self.profiles = profiles
        self.consents = consents
        self.require_consent = settings.require_consent
        self.erase = erase or profiles.delete
        self.audit: Audit = audit or _no_audit

    async def create_consent(self, new: NewConsent, owner: str) -> Consent:
        consent = await self.consents.create(new, owner)
        log.info("voice_consent_created", consent=consent.id, language=consent.language, bytes=len(new.recording))
        await self.audit("consent_create", owner, consent.id, language=consent.language)
        return consent

    async def delete_consent(self, consent_id: str, owner: str | None) -> tuple[Consent, list[str]]:
        """The record and every voice made under it; ``owner=None``: whoever made it (the operator).

        The voices go first: should one fail, the record stays, and deleting it again finishes the job.
        """
        consent = await self.consents.get(consent_id, owner)
        voices = await self._delete_voices_under(consent.id, owner)
        await self.consents.delete(consent.id, owner)
        # a voice stored while this ran (its create saw the record) is found now: a create re-checks the record
        # after storing, so one stored later than this look deletes itself
        voices += await self._delete_voices_under(consent.id, owner)
        log.info("voice_consent_deleted", consent=consent.id, voices_deleted=len(voices), by_operator=owner is None)
        await self.audit("consent_delete", owner or "operator", consent.id, voices_deleted=len(voices))
        return consent, voices

    async def create_voice(self, new: NewProfile, owner: str) -> VoiceProfile:
        """A voice profile; under TTS_REQUIRE_CONSENT only with a consent record of the same caller."""
        if new.consent is None:
            if self.require_consent:
                raise consent_required("a voice needs 'consent': the id of the speaker's consent record")
        else:
            try:
                await self.consents.get(new.consent, owner)
            except TtsError as error:
                if error.code is not ErrorCode.UNKNOWN_VOICE:
                    raise
                raise consent_required(f"no consent record {new.consent[:40]!r} of this caller") from None
        profile = await self.profiles.create(new, owner)
        log.info("voice_created", consent=profile.consent, duration_ms=profile.duration_ms)
        await self.audit("voice_create", owner, profile.id, consent=profile.consent)
        if new.consent is not None and not await self._consent_exists(new.consent, owner):
            # its consent was deleted while this voice was being stored: the voice goes with it
            await self.delete_voice(profile.id, actor=owner)
            raise consent_required(f"the consent record {new.consent[:40]!r} was deleted meanwhile")
        return profile

    async def _consent_exists(self, consent_id: str, owner: str) -> bool:
        try:
            await self.consents.get(consent_id, owner)
        except TtsError as error:
            if error.code is not ErrorCode.UNKNOWN_VOICE:
                raise
            return False
        return True

    async def _delete_voices_under(self, consent_id: str, owner: str | None) -> list[str]:
        voices = [p.id for p in await self.profiles.summaries() if p.consent == consent_id]
        return [v for v in voices if await self.delete_voice(v, actor=owner or "operator")]

    async def delete_voice(self, profile_id: str, owner: str | None = None, actor: str | None = None) -> bool:
        """True when there was such a voice; it is gone for every instance. The only path a voice is deleted by.

        ``owner``: a voice another caller made reads as not there (``None``: any, for the consent cascade).
        A profile made before consents has no owner: whoever holds its id may delete it, as before.
        ``actor``: who the audit trail names when that is not ``owner`` (the consent cascade's caller).
        """
        if owner is not None:
            try:
                made_by = (await self.profiles.get(profile_id)).owner
            except TtsError as error:
                if error.code is ErrorCode.UNKNOWN_VOICE:
                    return False
                raise
            if made_by not in (None, owner):
                return False
        deleted = await self.erase(profile_id)
        if deleted:
            await self.audit("voice_delete", actor or owner, profile_id)
        return deleted

    async def consent_page(self, page: ConsentPage, owner: str | None) -> dict[str, Any]:
        """OpenAI's cursor page of ``audio.voice_consent`` objects."""
        records, has_more = await self.consents.list(page, owner)
        data = [c.public() for c in records]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }

    async def profile_report(self) -> dict[str, Any]:
        """How many voice profiles there are, and which were made without a consent (ids shortened)."""
        summaries = await self.profiles.summaries()
        unconsented = [p for p in summaries if not p.consent]
        return {
            "total": len(summaries),
            "consented": len(summaries) - len(unconsented),
            "unconsented": [
                {"id": p.id[:SHOWN_ID_CHARS] + "…", "created_at": p.created_at}
                for p in sorted(unconsented, key=lambda p: p.created_at)
            ],
            "require_consent": self.require_consent,
        }
