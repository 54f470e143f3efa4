"""``tts-actor``: serve, and client commands that talk to a running service over NATS.

This module is the command line itself (the parser and the entry point); the commands are in
:mod:`.serve`, :mod:`.client_commands`, :mod:`.offline_commands` and :mod:`.detect`.
"""

from __future__ import annotations

import argparse
import os
import sys

from tts_actor.cli import detect
from tts_actor.cli.client_commands import SAY_WAIT_MS, cmd_audit, cmd_say, cmd_status, cmd_voices, cmd_watch, control
from tts_actor.cli.offline_commands import cmd_doctor, cmd_fetch
from tts_actor.cli.serve import cmd_http, cmd_serve
from tts_actor.config import ConfigError, load_settings
from tts_actor.observability.logs import setup_logging
from tts_actor.wire.messages import AudioFormat

DESCRIPTION = "``tts-actor``: serve, and client commands that talk to a running service over NATS."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-actor", description=DESCRIPTION)
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
    p.add_argument("--subtitles", metavar="FILE.vtt", help="also write WebVTT subtitles from the reply's word timings")
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
    p = sub.add_parser("audit", help="the audit trail: who created, deleted or used voices and consents (JSON lines)")
    p.add_argument("--action", help="only this action, e.g. voice_delete (default: all)")
    p.add_argument("--limit", type=int, default=1000, help="at most this many, the newest (default 1000)")
    p.set_defaults(func=cmd_audit)
    for action in ("retry", "unload"):
        p = sub.add_parser(action, help=f"{action} a backend on every instance")
        p.add_argument("backend")
        p.set_defaults(func=control(action))
    p = sub.add_parser("fetch", help="download backends' models into the cache now (image builds, air-gapped hosts)")
    p.add_argument("backends", nargs="+", metavar="backend")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("doctor", help="diagnose this host: packages, models, NATS, hub, disk")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)
    detect.add_parser(sub)
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
