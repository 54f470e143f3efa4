"""The client commands: say, status, voices, watch, audit, retry and unload, over NATS to a running service.

Each connects once (no reconnects: a person at a terminal wants the error now), runs, and
turns a :class:`~tts_actor.errors.TtsError` into its code, message and fix on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors

from statemachine import State
from tts_actor.cli.rendering import format_event, print_status, print_voices
from tts_actor.client.subtitles import webvtt
from tts_actor.config import ConfigError, Settings
from tts_actor.errors import TtsError
from tts_actor.wire.messages import AudioFormat, SynthesisOptions, SynthesisRequest, Timings

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


def _fleet_loaded(status: dict[str, Any]) -> bool:
    """Some instance of the fleet (this one at least) has a backend loaded."""
    fleet = status.get("fleet") or {}
    if any(summary["loaded"] for summary in (fleet.get("backends") or {}).values()):
        return True
    return any(b["state"] == State.LOADED.value for b in status["backends"])


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
        timings=Timings.WORD if args.subtitles else Timings.SEGMENT,
    )

    output = Path(args.output)
    for path in (output, *([Path(args.subtitles)] if args.subtitles else [])):
        if path != Path("-") and not path.parent.is_dir():
            print(f"error: no directory {path.parent}\nfix: create it, or pass another path", file=sys.stderr)
            return 2

    async def run(client: Any) -> int:
        if args.stream:
            code, timings = await _say_streamed(client, request, output, to_stdout, args)
            return code or await _write_subtitles(args.subtitles, request.text, timings)
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
        return await _write_subtitles(args.subtitles, request.text, reply.timings)

    return asyncio.run(_with_client(settings, run))


async def _write_subtitles(path: str | None, text: str, timings: list[dict[str, Any]]) -> int:
    """``--subtitles``: the WebVTT file; says how many segments had no word times (their cue is the segment)."""
    if not path:
        return 0
    try:
        await asyncio.to_thread(Path(path).write_text, webvtt(text, timings), encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {path}: {exc}\nfix: pass a writable --subtitles", file=sys.stderr)
        return 2
    without = sum(1 for t in timings if "words" not in t)
    note = f", {without} segment(s) without word times (timings_unavailable)" if without else ""
    print(f"{path}: WebVTT, {sum(len(t.get('words') or []) for t in timings)} words{note}", file=sys.stderr)
    return 0


async def _say_streamed(
    client: Any, request: SynthesisRequest, output: Path, to_stdout: bool, args: Any
) -> tuple[int, list[dict[str, Any]]]:
    """Write each chunk as it arrives (``-o -``: to stdout, for a player reading a pipe); the exit code, timings."""
    try:
        sink = sys.stdout.buffer if to_stdout else output.open("wb")
    except OSError as exc:
        print(f"error: cannot write {output}: {exc}\nfix: pass a writable -o", file=sys.stderr)
        return 2, []
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
    return 0, chunks.timings


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        status = await client.status()
        print(json.dumps(status, indent=2)) if args.json else print_status(status)
        return 0 if _fleet_loaded(status) else 1

    return asyncio.run(_with_client(settings, run))


def cmd_voices(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        voices = await client.voices(profiles=True)
        print(json.dumps(voices, indent=2)) if args.json else print_voices(voices)
        return 0

    return asyncio.run(_with_client(settings, run))


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """The audit trail, oldest first: one JSON object a line (who, which id, when, which instance)."""

    async def run(client: Any) -> int:
        from tts_actor.client.audit import read_audit

        for event in await read_audit(client.nc, settings.subject_prefix, args.action or ">", args.limit):
            print(json.dumps(event, ensure_ascii=False))
        return 0

    return asyncio.run(_with_client(settings, run))


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    async def run(client: Any) -> int:
        departures = asyncio.create_task(_print_departures(client.nc, settings.kv_bucket, args.json))
        try:
            async for event in client.watch(settings.kv_bucket):
                print(json.dumps(event.to_dict()) if args.json else format_event(event), flush=True)
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


def control(action: str) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        async def run(client: Any) -> int:
            print(json.dumps(await client.control(args.backend, action)))
            return 0

        return asyncio.run(_with_client(settings, run))

    return command
