"""``serve`` and ``http``: the commands that run a service, and the exit codes for why one cannot start.

Heavy imports (the app, the HTTP edge, tracing) happen inside the commands, so that the
client commands do not pay for them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from tts_actor.cli.client_commands import client_url
from tts_actor.config import ConfigError, Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from tts_actor.app import run_service
    from tts_actor.nats_edge.connection import NatsUnreachable
    from tts_actor.nats_edge.embedded_server import NatsServerError
    from tts_actor.observability.tracing import setup_tracing

    sample = Path(args.sample_out).absolute() if args.sample_out else None
    if sample is not None:
        try:
            sample.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: cannot create {sample.parent}: {exc}\nfix: pick a writable --sample-out", file=sys.stderr)
            return 2
    edge = _http_edge(settings, args.http) if args.http else None
    if isinstance(edge, int):
        return edge
    setup_tracing()
    try:
        return run_service(settings, sample, http_edge=edge)
    except OSError as exc:  # the HTTP port: busy, or not ours to bind
        print(f"error: cannot listen on {args.http}: {exc}\nfix: pick another --http HOST:PORT", file=sys.stderr)
        return 3
    except NatsUnreachable as exc:
        print(f"error: {exc}\nfix: check NATS_URL, or unset it to run the embedded server", file=sys.stderr)
        return 3
    except NatsServerError as exc:
        fix = (
            f"free port {settings.embedded_nats_port} (TTS_EMBEDDED_NATS_PORT) or set NATS_URL to a running server"
            if "address already in use" in str(exc)
            else "see the server's own words above; or set NATS_URL to a running server"
        )
        print(f"error: {exc}\nfix: {fix}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def _http_edge(settings: Settings, listen: str) -> Any:
    """The HTTP edge for ``listen``, or the exit code after saying why it cannot start."""
    from tts_actor.http_edge.app import HttpEdge
    from tts_actor.http_edge.edge_settings import EdgeConfigError, load_edge_settings, parse_listen

    try:
        host, port = parse_listen(listen)
        return HttpEdge(settings, load_edge_settings(), host, port)
    except EdgeConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_http(args: argparse.Namespace, settings: Settings) -> int:
    """The OpenAI-compatible HTTP edge alone, a client of the fleet on NATS_URL."""
    from tts_actor.http_edge.app import run_http_edge
    from tts_actor.nats_edge.connection import NatsUnreachable
    from tts_actor.observability.tracing import setup_tracing

    edge = _http_edge(settings, args.listen)
    if isinstance(edge, int):
        return edge
    setup_tracing("tts-actor-http")
    try:
        asyncio.run(run_http_edge(settings, edge, client_url(settings)))
    except OSError as exc:
        print(f"error: cannot listen on {args.listen}: {exc}\nfix: pick another --listen HOST:PORT", file=sys.stderr)
        return 3
    except NatsUnreachable as exc:
        print(f"error: {exc}\nfix: start the service (`tts-actor serve`) or set NATS_URL", file=sys.stderr)
        return 3
    return 0
