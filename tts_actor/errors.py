"""The closed set of error codes a caller can receive, each with a message and a fix."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ErrorCode(enum.StrEnum):
    """Documented in docs/protocol.md (error reply); a caller may switch on these."""

    INVALID_REQUEST = "invalid_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TEXT_TOO_LONG = "text_too_long"
    UNKNOWN_BACKEND = "unknown_backend"
    UNKNOWN_VOICE = "unknown_voice"
    CONSENT_REQUIRED = "consent_required"
    UNKNOWN_FORMAT = "unknown_format"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    UNSUPPORTED_SCRIPT = "unsupported_script"
    BACKEND_NOT_READY = "backend_not_ready"
    BACKEND_FAILED = "backend_failed"
    BUSY = "busy"
    DEADLINE_UNREACHABLE = "deadline_unreachable"
    SYNTHESIS_FAILED = "synthesis_failed"
    SYNTHESIS_TIMEOUT = "synthesis_timeout"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    WATERMARK_UNAVAILABLE = "watermark_unavailable"  # the [watermark] extra is not installed


# The HTTP-like number that goes in the ``Nats-Service-Error-Code`` header, so that
# generic NATS micro tooling can tell a client error from a server one.
SERVICE_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.TEXT_TOO_LONG: 413,
    ErrorCode.UNKNOWN_BACKEND: 404,
    ErrorCode.UNKNOWN_VOICE: 404,
    ErrorCode.CONSENT_REQUIRED: 400,
    ErrorCode.UNKNOWN_FORMAT: 400,
    ErrorCode.UNSUPPORTED_LANGUAGE: 422,
    ErrorCode.UNSUPPORTED_SCRIPT: 422,
    ErrorCode.BACKEND_NOT_READY: 503,
    ErrorCode.BACKEND_FAILED: 503,
    ErrorCode.BUSY: 429,
    # 503, not 429: the caller sent nothing too often; this instance cannot meet this request's deadline now
    # (a looser one would be queued), and 503 + Retry-After is what proxies and SDKs retry on another upstream
    ErrorCode.DEADLINE_UNREACHABLE: 503,
    ErrorCode.SYNTHESIS_FAILED: 500,
    ErrorCode.SYNTHESIS_TIMEOUT: 504,
    ErrorCode.OUT_OF_MEMORY: 507,
    ErrorCode.CANCELLED: 499,
    ErrorCode.INTERNAL: 500,
    ErrorCode.WATERMARK_UNAVAILABLE: 501,
}


@dataclass
class TtsError(Exception):
    """An error that becomes a structured reply: code, message and fix, always."""

    code: ErrorCode
    message: str
    fix: str
    backend: str | None = None
    state: str | None = None
    reason: str | None = None
    retry_after_ms: int | None = None
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def service_status(self) -> int:
        return SERVICE_STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code.value,
            "message": self.message,
            "fix": self.fix,
            "backend": self.backend,
            "state": self.state,
            "reason": self.reason,
            "retry_after_ms": self.retry_after_ms,
        }
        if self.detail:
            body["detail"] = self.detail
        return {"error": body}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TtsError:
        body = data["error"]
        return cls(
            code=ErrorCode(body["code"]),
            message=body["message"],
            fix=body["fix"],
            backend=body.get("backend"),
            state=body.get("state"),
            reason=body.get("reason"),
            retry_after_ms=body.get("retry_after_ms"),
            detail=body.get("detail"),
        )


INVALID_FIX = "Send a JSON object as docs/protocol.md describes the tts.synthesize request."


def invalid(message: str, fix: str = INVALID_FIX) -> TtsError:
    return TtsError(ErrorCode.INVALID_REQUEST, message, fix)


CONSENT_FIX = (
    "Record the speaker agreeing (tts.consents.create, or POST /v1/audio/voice_consents) and send that record's id "
    "as 'consent'; only its creator may use it."
)


def consent_required(message: str) -> TtsError:
    """A voice clone without a valid consent record of the same caller (TTS_REQUIRE_CONSENT)."""
    return TtsError(ErrorCode.CONSENT_REQUIRED, message, CONSENT_FIX, detail={"param": "consent"})
