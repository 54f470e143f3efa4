"""``tts-actor serve`` as a child process in a session of its own, its JSON log read event by event."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import cli_env


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    events: list[dict] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)

    async def wait_for(self, name: str, timeout_s: float = 60.0, **match: str) -> dict:
        """Read the JSON log until an event ``name`` with the given fields appears."""
        assert self.proc.stderr is not None

        async def scan() -> dict:
            for event in self.events:
                if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                    return event
            while True:
                line = await self.proc.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError(f"process ended before {name}: {self.events[-5:]}")
                text = line.decode(errors="replace").strip()
                if not text.startswith("{"):
                    continue
                event = json.loads(text)
                self.events.append(event)
                if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                    return event

        return await asyncio.wait_for(scan(), timeout_s)

    async def finish(self, timeout_s: float = 60.0) -> int:
        """Collect the rest of the log and the exit code."""
        assert self.proc.stderr is not None and self.proc.stdout is not None
        err, out = await asyncio.wait_for(asyncio.gather(self.proc.stderr.read(), self.proc.stdout.read()), timeout_s)
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("{"):
                self.events.append(json.loads(line))
        self.stdout.extend(out.decode(errors="replace").splitlines())
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    def names(self) -> list[str]:
        return [e.get("event", "") for e in self.events]


@asynccontextmanager
async def spawn(args: list[str], env: dict[str, str]) -> AsyncIterator[ServeProcess]:
    """A child in a session (and process group) of its own, as a shell runs a foreground job."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    running = ServeProcess(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:  # stopped as a user would, so its embedded nats-server goes with it
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_env(
        TTS_BACKENDS="piper",
        TTS_CACHE_DIR=str(tmp_path / "cache"),
        TTS_LOG_FORMAT="json",
        TTS_INSTANCE_ID="shutdown-test",
        TTS_SHUTDOWN_GRACE_S="2",
        **extra,
    )
