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
from tts_actor.logs import setup_logging
from tts_actor.messages import AudioFormat, SynthesisOptions, SynthesisRequest


def client_url(settings: Settings) -> str:
    return settings.nats_url or f"nats://127.0.0.1:{settings.embedded_nats_port}"


async def _with_client(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    from tts_actor.app import NatsUnreachable, connect
    from tts_actor.client import TtsClient

    try:
        nc = await connect(client_url(settings), "tts-actor cli", reconnect=False, deadline_s=3.0)
    except NatsUnreachable as exc:
        print(
            f"error: {exc}\nfix: start the service (`tts-actor serve`) or set NATS_URL",
            file=sys.stderr,
        )
        return 3
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
    print(f"instance {status['instance']}")
    for b in status["backends"]:
        langs = ",".join(b["languages"]) or "-"
        print(f"  {b['name']:<11} {b['state']:<11} {b['reason']:<18} languages={langs}")
        if b.get("fix"):
            print(f"  {'':<11} fix: {b['fix']}")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from tts_actor.app import NatsUnreachable, serve
    from tts_actor.nats_server import NatsServerError
    from tts_actor.telemetry import setup_tracing

    sample = Path(args.sample_out).absolute() if args.sample_out else None
    if sample is not None:
        try:
            sample.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: cannot create {sample.parent}: {exc}\nfix: pick a writable --sample-out", file=sys.stderr)
            return 2
    setup_tracing()
    try:
        asyncio.run(serve(settings, sample))
    except NatsUnreachable as exc:
        print(f"error: {exc}\nfix: check NATS_URL, or unset it to run the embedded server", file=sys.stderr)
        return 3
    except NatsServerError as exc:
        print(
            f"error: {exc}\nfix: free port {settings.embedded_nats_port} (TTS_EMBEDDED_NATS_PORT) "
            "or set NATS_URL to a running server",
            file=sys.stderr,
        )
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
        return 0 if any(b["state"] == State.LOADED.value for b in status["backends"]) else 1

    return asyncio.run(_with_client(settings, run))


def cmd_voices(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        print(json.dumps(await client.voices(), indent=2))
        return 0

    return asyncio.run(_with_client(settings, run))


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        try:
            async for event in client.watch(settings.kv_bucket):
                print(json.dumps(event.to_dict()) if args.json else _format_event(event), flush=True)
        except nats.errors.Error as exc:  # the server went away under us
            print(f"error: NATS connection lost ({exc!r})\nfix: check the server, then watch again", file=sys.stderr)
            return 3
        return 0

    try:
        return asyncio.run(_with_client(settings, run))
    except KeyboardInterrupt:
        return 0


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
    from tts_actor.fetch import fetch_backends

    unknown = [name for name in args.backends if name not in ADAPTERS]
    if unknown:
        print(f"error: unknown backend(s) {', '.join(unknown)}\nfix: use one of {', '.join(ADAPTERS)}", file=sys.stderr)
        return 2
    return asyncio.run(fetch_backends(settings, args.backends))


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from tts_actor.doctor import run_doctor

    return run_doctor(settings, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-actor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the service (embedded NATS when NATS_URL is unset)")
    p.add_argument("--sample-out", metavar="WAV", help="once Piper is loaded, speak a sample sentence into WAV")
    p.set_defaults(func=cmd_serve)
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
    p.add_argument("--wait-ms", type=int, default=0, help="wait this long for a backend still loading")
    p.add_argument("--speed", type=float)
    p.add_argument(
        "--timeout", type=float, help="seconds to wait for the audio (default: TTS_SYNTHESIS_TIMEOUT_S + wait)"
    )
    p.set_defaults(func=cmd_say)
    p = sub.add_parser("status", help="each backend's state, reason and fix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("voices", help="voices per backend and language")
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
