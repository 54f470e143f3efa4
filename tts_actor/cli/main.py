"""``tts-actor``: serve, and client commands that talk to a running service over NATS."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors

from statemachine import State, StateEvent
from tts_actor.config import ConfigError, Settings, load_settings
from tts_actor.errors import TtsError
from tts_actor.observability.logs import setup_logging
from tts_actor.wire.messages import AudioFormat, SynthesisOptions, SynthesisRequest

SAY_WAIT_MS = 30_000  # a person's first `say` after an idle unload waits for the reload instead of failing


def client_url(settings: Settings) -> str:
    return settings.nats_url or f"nats://127.0.0.1:{settings.embedded_nats_port}"


async def _with_client(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    from tts_actor.client.tts_client import TtsClient
    from tts_actor.nats_edge.auth import connect_options
    from tts_actor.nats_edge.connection import NatsUnreachable, connect

    try:
        auth = connect_options(settings)
        nc = await connect(client_url(settings), "tts-actor cli", reconnect=False, deadline_s=3.0, auth=auth)
    except NatsUnreachable as exc:
        print(
            f"error: {exc}\nfix: start the service (`tts-actor serve`) or set NATS_URL",
            file=sys.stderr,
        )
        return 3
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        # as long as the service may take, plus the trip: a long text is not a client timeout
        return await fn(TtsClient(nc, settings.subject_prefix, timeout_s=settings.synthesis_timeout_s + 5))
    except TtsError as error:
        print(f"error [{error.code.value}]: {error.message}\nfix: {error.fix}", file=sys.stderr)
        return 2
    finally:
        await nc.close()


def _format_event(event: StateEvent) -> str:
    line = f"{event.at}  {event.backend:<10} {event.to_state.value:<11} {event.reason.value}"
    if event.progress and event.progress.total:
        frac = event.progress.fraction or 0.0
        bar = "#" * int(frac * 30)
        line += f"  [{bar:<30}] {event.progress.done / 2**20:.1f}/{event.progress.total / 2**20:.1f} MiB"
    if event.message:
        line += f"  {event.message}"
    if event.fix:
        line += f"\n{'':<26}fix: {event.fix}"
    return line


def _print_status(status: dict[str, Any]) -> None:
    print(f"instance {status['instance']} (answering)")
    for b in status["backends"]:
        langs = ",".join(b["languages"]) or "-"
        print(f"  {b['name']:<11} {b['state']:<11} {b['reason']:<18} languages={langs}")
        if b.get("fix"):
            print(f"  {'':<11} fix: {b['fix']}")
    fleet = status.get("fleet")
    if not fleet:
        return
    print(f"fleet: {len(fleet['instances'])} instance(s)" + (f"  ({fleet['error']})" if fleet.get("error") else ""))
    for name, summary in fleet["backends"].items():
        where = f"loaded on {', '.join(summary['loaded'])}" if summary["loaded"] else "not loaded on any instance"
        print(f"  {name:<11} {where}")
        for failed in summary["failed"]:
            print(
                f"  {'':<11} failed on {failed['instance']}: {failed['reason']}"
                + (f"; fix: {failed['fix']}" if failed["fix"] else "")
            )
        for other in summary["other"]:
            print(f"  {'':<11} {other['state']} on {other['instance']} ({other['reason']})")


def _fleet_loaded(status: dict[str, Any]) -> bool:
    """Some instance of the fleet (this one at least) has a backend loaded."""
    fleet = status.get("fleet") or {}
    if any(summary["loaded"] for summary in (fleet.get("backends") or {}).values()):
        return True
    return any(b["state"] == State.LOADED.value for b in status["backends"])


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


def cmd_say(args: argparse.Namespace, settings: Settings) -> int:
    to_stdout = args.output == "-"
    fmt = args.format or (None if to_stdout else AudioFormat.from_extension(args.output)) or AudioFormat.WAV
    request = SynthesisRequest(
        text=args.text,
        language=args.language,
        voice=args.voice,
        backend=args.backend,
        format=AudioFormat(fmt),
        wait_ms=args.wait_ms,
        options=SynthesisOptions(speed=args.speed),
        sample_rate=args.sample_rate,
        bitrate=args.bitrate,
        stream=args.stream,
    )

    output = Path(args.output)
    if not to_stdout and not output.parent.is_dir():
        print(f"error: no directory {output.parent}\nfix: create it, or pass another -o", file=sys.stderr)
        return 2

    async def run(client: Any) -> int:
        if args.stream:
            return await _say_streamed(client, request, output, to_stdout, args)
        reply = await client.synthesize(request, timeout_s=args.timeout)
        try:
            if to_stdout:
                sys.stdout.buffer.write(reply.audio)
                sys.stdout.buffer.flush()
            else:
                await asyncio.to_thread(output.write_bytes, reply.audio)
        except OSError as exc:
            print(f"error: cannot write {output}: {exc}\nfix: pass a writable -o", file=sys.stderr)
            return 2
        print(
            f"{args.output}: {len(reply.audio)} bytes {request.format.value}, {reply.duration_ms} ms, "
            f"backend={reply.backend}, voice={reply.headers.get('Tts-Voice')}, {reply.sample_rate} Hz, "
            f"chunks={reply.chunks}, segments={len(reply.timings)}",
            file=sys.stderr if to_stdout else sys.stdout,
        )
        return 0

    return asyncio.run(_with_client(settings, run))


async def _say_streamed(client: Any, request: SynthesisRequest, output: Path, to_stdout: bool, args: Any) -> int:
    """Write each chunk as it arrives (``-o -``: to stdout, for a player reading a pipe)."""
    try:
        sink = sys.stdout.buffer if to_stdout else output.open("wb")
    except OSError as exc:
        print(f"error: cannot write {output}: {exc}\nfix: pass a writable -o", file=sys.stderr)
        return 2
    written = 0
    try:
        async with client.stream(request, timeout_s=args.timeout) as chunks:
            async for chunk in chunks:
                sink.write(chunk.data)
                sink.flush()
                written += len(chunk.data)
    finally:
        if not to_stdout:
            sink.close()
    end = chunks.end_headers
    print(
        f"{args.output}: {written} bytes {request.format.value} streamed, {end.get('Tts-Duration-Ms')} ms, "
        f"first audio after {end.get('Tts-First-Audio-Ms')} ms, segments={end.get('Tts-Segment-Count')}",
        file=sys.stderr,
    )
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        status = await client.status()
        print(json.dumps(status, indent=2)) if args.json else _print_status(status)
        return 0 if _fleet_loaded(status) else 1

    return asyncio.run(_with_client(settings, run))


def _print_voices(voices: dict[str, Any]) -> None:
    """One row per voice: backend, its state, language, voice id (what ``say --voice`` takes), description."""
    rows = [("BACKEND", "STATE", "LANGUAGE", "VOICE", "DESCRIPTION")]
    for backend, entry in voices["backends"].items():
        listed = [(lang, v) for lang, offered in entry["languages"].items() for v in offered]
        rows += [(backend, entry["state"], lang, v["id"], v.get("description") or "") for lang, v in listed]
        if not listed:
            rows.append((backend, entry["state"], "-", "-", "no voices offered"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])


def cmd_voices(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        voices = await client.voices()
        print(json.dumps(voices, indent=2)) if args.json else _print_voices(voices)
        return 0

    return asyncio.run(_with_client(settings, run))


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        departures = asyncio.create_task(_print_departures(client.nc, settings.kv_bucket, args.json))
        try:
            async for event in client.watch(settings.kv_bucket):
                print(json.dumps(event.to_dict()) if args.json else _format_event(event), flush=True)
        except nats.errors.Error as exc:  # the server went away under us
            print(f"error: NATS connection lost ({exc!r})\nfix: check the server, then watch again", file=sys.stderr)
            return 3
        finally:
            departures.cancel()
        return 0

    try:
        return asyncio.run(_with_client(settings, run))
    except KeyboardInterrupt:
        return 0


async def _print_departures(nc: Any, bucket: str, as_json: bool) -> None:
    """Instances leaving the fleet: stopped (entries deleted) or dead (entries aged out)."""
    from tts_actor.fleet.view import follow_departures

    try:
        async for gone in follow_departures(nc, bucket):
            line = json.dumps(gone.to_dict()) if as_json else f"{'':<26}{gone.backend:<10} gone from {gone.instance}"
            print(line if as_json else f"{line} ({gone.why.replace('_', ' ')})", flush=True)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # no JetStream: state events only
        print(f"note: departures not shown ({type(exc).__name__})", file=sys.stderr)


def _control(action: str) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        async def run(client: Any) -> int:
            print(json.dumps(await client.control(args.backend, action)))
            return 0

        return asyncio.run(_with_client(settings, run))

    return command


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    """Download the models of the named backends into TTS_CACHE_DIR; no NATS needed."""
    from tts_actor.backends import ADAPTERS
    from tts_actor.cli.fetch import fetch_backends

    unknown = [name for name in args.backends if name not in ADAPTERS]
    if unknown:
        print(f"error: unknown backend(s) {', '.join(unknown)}\nfix: use one of {', '.join(ADAPTERS)}", file=sys.stderr)
        return 2
    return asyncio.run(fetch_backends(settings, args.backends))


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from tts_actor.cli.doctor import run_doctor

    return run_doctor(settings, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-actor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the service (embedded NATS when NATS_URL is unset)")
    p.add_argument("--sample-out", metavar="WAV", help="once Piper is loaded, speak a sample sentence into WAV")
    p.add_argument("--http", metavar="HOST:PORT", help="also serve the OpenAI-compatible HTTP API here")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("http", help="serve the OpenAI-compatible HTTP API, a client of the service over NATS")
    p.add_argument("--listen", default="127.0.0.1:8000", metavar="HOST:PORT")
    p.set_defaults(func=cmd_http)
    p = sub.add_parser("say", help="synthesize text through a running service")
    p.add_argument("text")
    p.add_argument("-o", "--output", default="out.wav", help="file (its extension picks the format), or - for stdout")
    p.add_argument("-l", "--language", default="en")
    p.add_argument("--voice")
    p.add_argument("--backend")
    p.add_argument("--format", choices=[f.value for f in AudioFormat], help="default: from -o's extension, else wav")
    p.add_argument("--sample-rate", type=int, help="resample to this rate (Hz)")
    p.add_argument("--bitrate", type=int, help="bit/s for opus, mp3, aac")
    p.add_argument("--stream", action="store_true", help="write audio as each segment arrives")
    p.add_argument(
        "--wait-ms",
        type=int,
        default=SAY_WAIT_MS,
        help="wait up to this long for a backend still loading, or reloading after an idle unload "
        f"(default {SAY_WAIT_MS}; the service caps it at TTS_MAX_WAIT_MS)",
    )
    p.add_argument("--speed", type=float)
    p.add_argument(
        "--timeout", type=float, help="seconds to wait for the audio (default: TTS_SYNTHESIS_TIMEOUT_S + wait)"
    )
    p.set_defaults(func=cmd_say)
    p = sub.add_parser("status", help="each backend's state, reason and fix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("voices", help="voices per backend and language, as a table")
    p.add_argument("--json", action="store_true", help="the tts.voices reply as JSON, for scripts")
    p.set_defaults(func=cmd_voices)
    p = sub.add_parser("watch", help="print state events live, starting from the current states")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_watch)
    for action in ("retry", "unload"):
        p = sub.add_parser(action, help=f"{action} a backend on every instance")
        p.add_argument("backend")
        p.set_defaults(func=_control(action))
    p = sub.add_parser("fetch", help="download backends' models into the cache now (image builds, air-gapped hosts)")
    p.add_argument("backends", nargs="+", metavar="backend")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("doctor", help="diagnose this host: packages, models, NATS, hub, disk")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `tts-actor voices | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
