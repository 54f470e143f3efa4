"""What every doctor check returns, and the deadline every network probe runs under.

Shared by the check modules (one per area) and the report, so that none of them imports another.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

NETWORK_TIMEOUT_S = 2.0
T = TypeVar("T")


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "level": self.level.value}


def run_bounded(fn: Callable[[], T], timeout_s: float) -> T:
    """Run ``fn`` in a daemon thread; raise TimeoutError if it is not done in ``timeout_s``.

    A daemon thread (not an executor) so that a hung DNS lookup is abandoned, not awaited at exit.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="doctor-probe", daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"no answer within {timeout_s:.1f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
