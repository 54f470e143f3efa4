"""``tts-actor detect FILE``: does the file carry the inaudible watermark?

Here by default (needs the ``[watermark]`` extra on this host, no service), or with ``--service`` through
a running service's ``tts.detect`` (no extra here). Exit status as grep's: 0 marked, 1 not marked, 2 an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tts_actor.cli.client_commands import _with_client
from tts_actor.config import Settings
from tts_actor.errors import TtsError

MARKED, NOT_MARKED, ERROR = 0, 1, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("detect", help="say whether an audio file carries the inaudible watermark (exit 0: it does)")
    p.add_argument("file", help="any audio file FFmpeg reads (wav, flac, mp3, aac, opus, ...)")
    p.add_argument("--service", action="store_true", help="ask a running service (tts.detect) instead of this host")
    p.add_argument("--json", action="store_true", help='print {"watermarked", "confidence", "seconds"} as JSON')
    p.set_defaults(func=cmd_detect)


def _read(path: Path, limit: int) -> bytes | None:
    try:
        size = path.stat().st_size
        if size > limit:
            print(
                f"error: {path} is {size} bytes; detection takes at most {limit} (TTS_MAX_REQUEST_BYTES)\n"
                "fix: cut a shorter excerpt (a few seconds of speech are enough)",
                file=sys.stderr,
            )
            return None
        return path.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}\nfix: pass a readable file", file=sys.stderr)
        return None


def _report(path: Path, result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(result))
    else:
        verdict = "watermarked" if result["watermarked"] else "not watermarked"
        print(f"{path}: {verdict} (confidence {result['confidence']:.3f}, {result['seconds']:.1f} s scored)")
    return MARKED if result["watermarked"] else NOT_MARKED


def _fail(error: TtsError, as_json: bool) -> int:
    if as_json:
        print(json.dumps(error.to_dict()))
    print(f"error [{error.code.value}]: {error.message}\nfix: {error.fix}", file=sys.stderr)
    return ERROR


def cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.file)
    data = _read(path, settings.max_request_bytes)
    if data is None:
        return ERROR
    if args.service:

        async def ask(client: Any) -> int:
            return _report(path, await client.detect(data), args.json)

        return asyncio.run(_with_client(settings, ask))
    from tts_actor.audio.watermark import detect_file

    try:
        return _report(path, detect_file(data).to_dict(), args.json)
    except TtsError as error:
        return _fail(error, args.json)
