"""Answering a NATS request: its reply subject as a :data:`Publish`, and the structured error reply."""

from __future__ import annotations

from nats.micro.request import Request

from tts_actor.errors import TtsError
from tts_actor.observability.logs import get_logger
from tts_actor.wire.framing import Framer, Publish, echoed_request_id

log = get_logger(__name__)


def publisher(req: Request) -> Publish:
    """Messages to ``req``'s reply subject."""

    async def publish(data: bytes, headers: dict[str, str]) -> None:
        await req.respond(data, headers=headers)

    return publish


async def respond_error(req: Request, error: TtsError, max_payload: int, stream: bool = False) -> None:
    """The structured error; a stream request then gets its (empty) end message too. Never raises."""
    try:
        await Framer(publisher(req), max_payload, echoed_request_id(req.headers)).fail(error, stream)
    except Exception as exc:  # no reply subject, or the connection went away
        log.warning("reply_failed", error=repr(exc))
