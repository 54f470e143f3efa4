"""Every NATS subject, queue group and JetStream store the service uses, in one place.

The service's subscriptions and publishes, the client's requests and the server's role file
(:mod:`tts_actor.wire.roles`, written into ``ops/nats-roles.conf``) are all built from here, so a
subject added to the code is a subject the shipped permissions know about. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DEFAULT_INBOX = "_INBOX"  # nats-py's inbox prefix when NATS_INBOX_PREFIX is not set
CONSENT_ACTIONS = ("create", "get", "update", "list", "delete")
CONSENT_ADMIN_ACTIONS = ("list", "delete")


class _Names(Protocol):
    """The settings fields the subjects come from (``tts_actor.config.Settings`` has them)."""

    subject_prefix: str
    queue_group: str
    kv_bucket: str
    profiles_bucket: str
    audio_cache_bucket: str
    consents_bucket: str
    audio_claims_bucket: str


@dataclass(frozen=True)
class Subjects:
    """The names for one deployment (``TTS_SUBJECT_PREFIX``, ``TTS_QUEUE_GROUP``, the bucket settings)."""

    prefix: str = "tts"
    queue_group: str = "tts"
    kv_bucket: str = "tts_state"
    profiles_bucket: str = "tts_voices"
    audio_cache_bucket: str = "tts_audio"
    consents_bucket: str = "tts_consents"
    audio_claims_bucket: str = "tts_claims"

    @classmethod
    def of(cls, settings: _Names) -> Subjects:
        return cls(
            settings.subject_prefix,
            settings.queue_group,
            settings.kv_bucket,
            settings.profiles_bucket,
            settings.audio_cache_bucket,
            settings.consents_bucket,
            settings.audio_claims_bucket,
        )

    def subject(self, *parts: str) -> str:
        return ".".join((self.prefix, *parts))

    # --- request-reply endpoints (nats.micro service "tts", queue group ``queue_group``) ---------------
    @property
    def synthesize(self) -> str:
        return self.subject("synthesize")

    @property
    def status(self) -> str:
        return self.subject("status")

    @property
    def voices(self) -> str:
        return self.subject("voices")

    @property
    def health(self) -> str:
        return self.subject("health")

    @property
    def voices_create(self) -> str:
        return self.subject("voices", "create")

    @property
    def voices_delete(self) -> str:
        return self.subject("voices", "delete")

    @property
    def detect(self) -> str:
        """Whether an audio file carries the inaudible watermark (nats_edge/detect.py)."""
        return self.subject("detect")

    def consents(self, action: str) -> str:
        """``<prefix>.consents.<action>``: create, get, update, list, delete, each on the caller's own records."""
        return self.subject("consents", action)

    def consents_admin(self, action: str) -> str:
        """``<prefix>.consents.admin.<action>`` (list, delete): every caller's records; the operator's alone."""
        return self.subject("consents", "admin", action)

    def endpoints(self) -> tuple[tuple[str, str], ...]:
        """(endpoint name, subject) of every nats.micro endpoint, in registration order."""
        return self.tenant_endpoints() + self.operator_endpoints()

    def tenant_endpoints(self) -> tuple[tuple[str, str], ...]:
        """The endpoints a translator may call: synthesis, the small reads, its voices and consents."""
        return (
            ("synthesize", self.synthesize),
            ("status", self.status),
            ("voices", self.voices),
            ("health", self.health),
            ("voices_create", self.voices_create),
            ("voices_delete", self.voices_delete),
            ("detect", self.detect),
            *((f"consents_{action}", self.consents(action)) for action in CONSENT_ACTIONS),
        )

    def operator_endpoints(self) -> tuple[tuple[str, str], ...]:
        """The endpoints over every caller's records: only the operator role may publish on them."""
        return tuple((f"consents_admin_{action}", self.consents_admin(action)) for action in CONSENT_ADMIN_ACTIONS)

    # --- fan-out subjects (every instance, no queue group) -----------------------------------------
    @property
    def cancel(self) -> str:
        return self.subject("cancel")

    def control(self, backend: str = "*", action: str = "*") -> str:
        """``<prefix>.control.<backend>.<action>``; the wildcards are what the service subscribes."""
        return self.subject("control", backend, action)

    def state(self, backend: str = ">") -> str:
        """Live state events: ``<prefix>.state.<backend>`` (``>``: all of them)."""
        return self.subject("state", backend)

    # --- routing by interest between instances (fleet.routing) ---------------------------------------
    def backend_synthesize(self, backend: str = "*") -> str:
        return self.subject("backend", backend, "synthesize")

    def backend_queue(self, backend: str) -> str:
        return f"{self.queue_group}-{backend}"

    # --- erasure and audit: JetStream streams the service publishes into -------------------------------
    @property
    def erasure(self) -> str:
        """A deleted voice's reference digest, to every instance (and kept for the ones that were away)."""
        return self.subject("erasure", "voice")

    @property
    def erasure_stream(self) -> str:
        return self._stream_name("ERASURES")

    def audit(self, action: str = ">") -> str:
        """``<prefix>.audit.<action>``: who created, deleted or used a voice or consent (``>``: all of them)."""
        return self.subject("audit", action)

    @property
    def audit_stream(self) -> str:
        return self._stream_name("AUDIT")

    def _stream_name(self, what: str) -> str:
        """``TTS_AUDIT`` for prefix ``tts``; stream names may not hold dots, so ``acme.tts`` -> ``ACME_TTS_AUDIT``."""
        return f"{self.prefix.replace('.', '_').replace('*', '_').replace('>', '_').upper()}_{what}"

    @property
    def audio_refs_bucket(self) -> str:
        """The KV index from a reference clip's digest to the audio cache keys made from it (``<digest>.<key>``)."""
        return f"{self.audio_cache_bucket}_refs"

    # --- JetStream: the state KV, the claims KV and the object stores ------------------------------------
    def kv(self) -> str:
        """Writes to the state bucket."""
        return f"$KV.{self.kv_bucket}.>"

    def audio_refs(self) -> str:
        """Writes to the audio cache's index bucket."""
        return f"$KV.{self.audio_refs_bucket}.>"

    def claims(self) -> str:
        """Writes to the coalescing claims bucket: who synthesizes which audio cache key now."""
        return f"$KV.{self.audio_claims_bucket}.>"

    def audio_cache_gone(self) -> tuple[str, ...]:
        """The server's advisories that the audio cache's stream was deleted or purged (memory copies go too)."""
        stream = f"OBJ_{self.audio_cache_bucket}"
        return (f"$JS.EVENT.ADVISORY.STREAM.DELETED.{stream}", f"$JS.EVENT.ADVISORY.STREAM.PURGED.{stream}")

    def object_stores(self) -> tuple[str, ...]:
        """Chunks and metadata of the voice profiles, the audio cache and the consent records."""
        return (f"$O.{self.profiles_bucket}.>", f"$O.{self.audio_cache_bucket}.>", f"$O.{self.consents_bucket}.>")

    def kv_read_api(self) -> tuple[str, ...]:
        """The JetStream API calls a reader (get, watch) of the state bucket makes, and nothing that writes."""
        return self.stream_read_api(f"KV_{self.kv_bucket}")

    def stream_read_api(self, stream: str) -> tuple[str, ...]:
        """The JetStream API calls a reader of ``stream`` makes (info, gets, an ordered consumer), no writes."""
        return (
            "$JS.API.INFO",
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$JS.FC.{stream}.>",
        )


def inbox_subscription(prefix: str) -> str:
    """What a user whose connection uses inbox ``prefix`` must be allowed to subscribe."""
    return f"{prefix}.>"


def tenant_inbox(user: str) -> str:
    """The inbox prefix of a NATS user: ``_INBOX_<user>`` (set it as NATS_INBOX_PREFIX for that user)."""
    return f"{DEFAULT_INBOX}_{user}"
