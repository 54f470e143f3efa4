"""Every environment variable the code reads is in docs/configuration.md, and the page names no setting that is gone.

The page's last section ("Read by other programs": nats-server's role passwords, the tests' wheel
cache) is left out of both checks.

The code is scanned, not imported: an AST walk of ``tts_actor/`` finds the names handed to the
environment readers (``env.get("X")``, ``os.environ["X"]``, ``os.getenv``, ``"X" in env`` and
config.py's typed readers such as ``_seconds(env, "X", ...)``). A name built per backend,
``f"TTS_{name.upper()}_REPO"``, stands for the documented ``TTS_<BACKEND>_REPO``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tts_actor"
PAGE = ROOT / "docs" / "configuration.md"
PREFIXES = ("TTS_", "NATS_", "HF_", "OTEL_")  # the service's own, NATS's, the hub's, OpenTelemetry's
NAME = re.compile(r"^(?:TTS|NATS|HF|OTEL)_[A-Z0-9_<>]+$")
DOCUMENTED = re.compile(r"\b(?:TTS|NATS|HF|OTEL)_[A-Z0-9_<>]*[A-Z0-9>]")
READERS = {"get", "getenv", "_bool", "_number", "_seconds", "_port", "_existing_file"}  # the first str arg is the name
ENVIRONMENTS = {"env", "environ", "os.environ"}  # what a subscript or an ``in`` test reads the environment from


def _name(node: ast.expr) -> str | None:
    """A variable name from a constant or a per-backend f-string (``TTS_{name.upper()}_X`` -> ``TTS_<BACKEND>_X``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "<BACKEND>" for v in node.values)
    else:
        return None
    return text if NAME.match(text) else None


def _is_environment(node: ast.expr) -> bool:
    return ast.unparse(node) in ENVIRONMENTS


def names_read(source: Path = SOURCE) -> dict[str, str]:
    """Variable name -> the first place that reads it, over every module of the package."""
    found: dict[str, str] = {}
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in READERS:
                    candidates = [arg for arg in node.args[:2] if _name(arg)][:1]
            elif isinstance(node, ast.Subscript) and _is_environment(node.value):
                candidates = [node.slice]
            elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In) for op in node.ops):
                if _is_environment(node.comparators[0]):
                    candidates = [node.left]
            for candidate in candidates:
                name = _name(candidate)
                if name is not None:
                    found.setdefault(name, f"{path.relative_to(source.parent)}:{node.lineno}")
    return found


OTHERS = "## Read by other programs"  # the page's last section: names the service does not read (nats-server's, tests')


def names_documented(page: Path = PAGE) -> set[str]:
    """The names the page documents as the service's settings: everything above its section on other programs."""
    return set(DOCUMENTED.findall(page.read_text().split(OTHERS)[0]))


def test_the_scan_finds_the_readers_it_claims_to() -> None:
    """Guards the guard: a scan that found nothing would pass the checks below vacuously."""
    read = names_read()
    for expected in (
        "TTS_MAX_TEXT_CHARS",
        "TTS_<BACKEND>_REPO",
        "NATS_URL",
        "NATS_CREDS",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
    ):
        assert expected in read, sorted(read)
    assert "TTS_HTTP_API_KEYS" in read  # read by the HTTP edge, outside config.py
    assert "TTS_HTTP_VOICE_ALIASES" in read  # read by an ``in env`` test too


def test_a_new_setting_is_found_wherever_it_is_read(tmp_path: Path) -> None:
    """What a newcomer adding a setting would write, in any of the reader shapes, is seen by the scan."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "new.py").write_text(
        "import os\n"
        "def read(env):\n"
        "    a = env.get('TTS_NEW_A', '1')\n"
        "    b = os.environ['TTS_NEW_B']\n"
        "    c = _seconds(env, 'TTS_NEW_C', 3.0)\n"
        "    d = 'TTS_NEW_D' in env\n"
        "    e = [env.get(f'TTS_{n.upper()}_NEW_E') for n in ('piper',)]\n"
        "    f = env.get('PATH')  # not a setting of ours\n"
    )
    read = names_read(package)
    assert set(read) == {"TTS_NEW_A", "TTS_NEW_B", "TTS_NEW_C", "TTS_NEW_D", "TTS_<BACKEND>_NEW_E"}
    assert not set(read) & names_documented()  # so the check below would name each of them


def test_every_setting_the_code_reads_is_documented() -> None:
    missing = {name: where for name, where in names_read().items() if name not in names_documented()}
    assert not missing, f"read by the code but not in docs/configuration.md: {missing}"


def test_every_setting_documented_is_read_by_the_code() -> None:
    read = names_read()
    stale = sorted(name for name in names_documented() if name.startswith("TTS_") and name not in read)
    assert not stale, f"in docs/configuration.md but read nowhere in tts_actor/: {stale}"
