"""The NATS connection: a bounded first connect, then reconnects forever for a long-lived client.

Shared by the service, the HTTP edge and the CLI, so each fails fast the same way when NATS is unreachable.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlparse

import nats
import nats.errors
from nats.aio.client import Client

from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.wire.link import LinkState

log = get_logger(__name__)

__all__ = ["NatsUnreachable", "connect", "report_nats_error"]
# the server's -ERR, as nats-py passes it on: 'Permissions Violation for Subscription to "x" using queue "q"'
PERMISSION_RE = re.compile(
    r'permissions violation for (publish|subscription) to "([^"]*)"(?: using queue "([^"]*)")?', re.I
)


class NatsUnreachable(ConnectionError):
    """The first connection to NATS did not succeed within its bound."""


async def connect(
    url: str,
    name: str,
    reconnect: bool = True,
    deadline_s: float = 10.0,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    auth: Mapping[str, object] | None = None,
    watch: LinkState | None = None,
) -> Client:
    """Connect within ``deadline_s``; once connected, a long-lived connection reconnects forever.

    nats-py retries the first connection ``max_reconnect_attempts`` times (about 120 s by
    default) before giving up: the very hang this service exists to remove, so the first
    connection gets its own deadline. A host name that does not resolve fails at once.
    ``auth`` holds credentials and TLS (:func:`tts_actor.nats_edge.auth.connect_options`);
    ``watch`` learns when the connection goes down and comes back (for ``/healthz``).
    """
    await _check_resolvable(url, deadline_s)

    async def on_error(exc: Exception) -> None:
        report_nats_error(exc)

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):  # our own shutdown is no news
            log.warning("nats_disconnected")
            if watch is not None:
                watch.lost()

    async def reconnected() -> None:
        log.info("nats_reconnected")
        if watch is not None:
            watch.back()
        if on_reconnected is not None:
            await on_reconnected()

    nc = Client()
    options: dict[str, object] = dict(
        servers=[u.strip() for u in url.split(",")],
        name=name,
        connect_timeout=min(5.0, deadline_s),
        error_cb=on_error,
        reconnect_time_wait=0.5,
        **(auth or {}),
    )
    if reconnect:
        options.update(max_reconnect_attempts=-1, disconnected_cb=on_disconnected, reconnected_cb=reconnected)
    else:
        options.update(allow_reconnect=False, max_reconnect_attempts=1)
    try:
        await asyncio.wait_for(nc.connect(**options), deadline_s)  # type: ignore[arg-type]
    except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
        await nc.close()
        raise NatsUnreachable(f"NATS at {url} did not accept a connection within {deadline_s} s ({exc!r})") from None
    except nats.errors.Error as exc:  # refused credentials, TLS required: no point in retrying
        await nc.close()
        raise NatsUnreachable(f"NATS at {url} refused the connection: {exc}") from None
    return nc


def report_nats_error(exc: Exception) -> None:
    """A refused subscription or publish is a broken deployment (the roles do not fit the code): say so, loudly.

    The server never tells the publisher otherwise: the message is dropped and a request simply gets no reply.
    """
    found = PERMISSION_RE.search(str(exc))
    if found is None:
        log.debug("nats_error", error=repr(exc))
        return
    operation, subject, queue = found.groups()
    operation = operation.lower()
    metrics.NATS_PERMISSION_ERRORS.labels(operation).inc()
    log.warning(
        "nats_permission_denied",
        subject=subject,
        operation=operation,
        queue=queue,
        fix="the NATS user lacks this right: regenerate ops/nats-roles.conf (python -m tts_actor.wire.roles)",
    )


async def _check_resolvable(url: str, deadline_s: float) -> None:
    """Fail at once when no server's host name resolves (``NATS_URL=garbage``), instead of at the deadline."""
    loop = asyncio.get_running_loop()
    problems = []
    for server in (u.strip() for u in url.split(",")):
        parsed = urlparse(server if "://" in server else f"nats://{server}")
        try:
            await asyncio.wait_for(
                loop.getaddrinfo(parsed.hostname, parsed.port or 4222, type=socket.SOCK_STREAM), min(deadline_s, 5.0)
            )
            return  # one server resolves: the connect decides
        except TimeoutError:
            return  # slow DNS is not a verdict; the connect's deadline bounds it
        except (OSError, ValueError) as exc:
            problems.append(f"{parsed.hostname!r}: {getattr(exc, 'strerror', None) or exc}")
    raise NatsUnreachable(f"NATS_URL={url}: the host name does not resolve ({'; '.join(problems)})")
