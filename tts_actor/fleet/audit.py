"""The audit trail: who created, deleted or used a voice or a consent, as events in a JetStream stream.

Each event goes out on ``<prefix>.audit.<action>`` into the stream ``<PREFIX>_AUDIT`` (kept
``TTS_AUDIT_MAX_AGE_S``), so it outlives the instance that wrote it and any reader (an operator,
``tts-actor audit``) can replay it. An event says who (the NATS user, an HTTP key id, as far as the
service knows), which id, when and which instance; never the text or the audio: fields are short
scalars, and names that would carry content are refused outright.

Recording never fails the request it describes: a lost event is a warning in the log.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from tts_actor.config import Settings
from tts_actor.observability.logs import get_logger
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
ACTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # one subject token: voice_create, consent_delete, synthesize
MAX_FIELD_CHARS = 200  # ids, codes, names of backends: nothing longer belongs in an audit event
# names of what an audit event must never hold: what was said, what it sounded like
FORBIDDEN_FIELDS = frozenset(
    {"text", "input", "audio", "reference_audio", "reference_text", "recording", "audio_sample", "data", "transcript"}
)
RESERVED_FIELDS = frozenset({"action", "actor", "id", "at", "instance"})
Scalar = str | int | float | bool | None

# the actions this service records (h7's consent endpoints use the consent_* ones)
VOICE_CREATE, VOICE_DELETE, SYNTHESIZE = "voice_create", "voice_delete", "synthesize"
CONSENT_CREATE, CONSENT_DELETE = "consent_create", "consent_delete"


def audit_event(action: str, actor: str | None, subject_id: str, instance: str, **fields: Scalar) -> dict[str, Any]:
    """The event's body, checked: a content-bearing or oversized field is a programming error (ValueError)."""
    if not ACTION_RE.match(action):
        raise ValueError(f"audit action {action!r} is not one subject token of lower-case letters, digits, _")
    for name, value in fields.items():
        if name.lower() in FORBIDDEN_FIELDS or name in RESERVED_FIELDS:
            raise ValueError(f"audit field {name!r} is not allowed: events carry ids, never text or audio")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"audit field {name!r} must be a short scalar, not {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise ValueError(f"audit field {name!r} is {len(value)} characters; the limit is {MAX_FIELD_CHARS}")
    return {
        "action": action,
        "actor": (actor or "unknown")[:MAX_FIELD_CHARS],
        "id": subject_id[:MAX_FIELD_CHARS],
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "instance": instance,
        **fields,
    }


class AuditTrail:
    """``await record(action, actor, subject_id, **fields)``; ``record_soon`` when the caller must not wait."""

    def __init__(self, nc: Client, settings: Settings, timeout_s: float = 2.0) -> None:
        self.nc = nc
        self.subjects = Subjects.of(settings)
        self.instance = settings.instance
        self.max_age_s = settings.audit_max_age_s
        self.replicas = settings.js_replicas
        self.timeout_s = timeout_s
        self._ready = False
        self._pending: set[asyncio.Task[bool]] = set()

    async def _ensure_stream(self) -> None:
        """The stream, made on first use (or its retention brought to the setting); idempotent across the fleet."""
        if self._ready:
            return
        js = self.nc.jetstream(timeout=self.timeout_s)
        config = StreamConfig(
            name=self.subjects.audit_stream,
            description="tts-actor audit trail: consents, voices, cloned syntheses (ids only)",
            subjects=[self.subjects.audit()],
            retention=RetentionPolicy.LIMITS,
            max_age=self.max_age_s,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
        )
        try:
            await js.add_stream(config)
        except Exception:  # it exists with other settings: bring its retention to this instance's setting
            await js.update_stream(config)
        self._ready = True

    async def record(self, action: str, actor: str | None, subject_id: str, **fields: Scalar) -> bool:
        """Publish one event and wait for the stream's ack; False (logged) when it could not be kept."""
        event = audit_event(action, actor, subject_id, self.instance, **fields)
        try:
            await self._ensure_stream()
            js = self.nc.jetstream(timeout=self.timeout_s)
            await js.publish(self.subjects.audit(action), json.dumps(event).encode(), timeout=self.timeout_s)
        except Exception as exc:
            self._ready = False
            log.warning("audit_event_lost", action=action, error=repr(exc), fix="check JetStream on the NATS server")
            return False
        log.debug("audit_recorded", action=action)
        return True

    def record_soon(
        self,
        action: str,
        actor: str | None,
        subject_id: str,
        only_if: Callable[[], Awaitable[bool]] | None = None,
        **fields: Scalar,
    ) -> None:
        """Record in the background (a synthesis does not wait for its audit event); checked at once.

        ``only_if``: recorded only when it answers True (a voice that exists: an unknown or deleted id is refused,
        not used); when it cannot answer, the event is recorded, so that a use is never left out.
        """
        audit_event(action, actor, subject_id, self.instance, **fields)  # a bad field raises here, in the caller
        task = asyncio.create_task(self._record_if(only_if, action, actor, subject_id, **fields))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record_if(
        self,
        only_if: Callable[[], Awaitable[bool]] | None,
        action: str,
        actor: str | None,
        subject_id: str,
        **fields: Scalar,
    ) -> bool:
        if only_if is not None:
            try:
                if not await only_if():
                    return False
            except Exception as exc:
                log.warning("audit_check_failed", action=action, error=repr(exc))
        return await self.record(action, actor, subject_id, **fields)

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Let events in flight be kept (shutdown, tests), within a bound."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
