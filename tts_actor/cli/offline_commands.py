"""``fetch`` and ``doctor``: the commands that need no running service, only this host.

Their modules are imported when the command runs, so that the other commands do not load
the hub client, tqdm or the doctor's probes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tts_actor.config import Settings


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
