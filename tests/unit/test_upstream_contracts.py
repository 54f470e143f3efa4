"""Every upstream name an adapter uses exists in the engine versions it is tested with, read from their source.

Each adapter module declares what it relies on (``UPSTREAM``, see
tts_actor/backends/upstream.py). The pinned wheels of chatterbox-tts, coqui-tts and
boson-multimodal are downloaded once per version without dependencies (into
``$TTS_UPSTREAM_WHEELS``, default ``~/.cache/tts-actor/upstream-wheels``), unpacked
and parsed with ``ast``: nothing of them is imported or installed. Engines that are
installed here (transformers, uroman, piper-tts) are parsed from the installed source.
A rename upstream fails here. Without network access to PyPI the wheel tests skip,
saying so.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support import stand_in_chatterbox as chatterbox_stand_ins
from tests.support import stand_in_engines as engine_stand_ins
from tests.support.upstream_source import NoNetwork, SourceTree, fetch_wheel, parameters
from tts_actor.backends import chatterbox, higgs, mms, piper, xtts
from tts_actor.backends.upstream import TESTED_VERSIONS, Kind, Upstream

ADAPTERS = (chatterbox, xtts, higgs, mms, piper)
DECLARED: list[Upstream] = [entry for adapter in ADAPTERS for entry in adapter.UPSTREAM]
ROOT = Path(__file__).resolve().parents[2]


def wheel_cache() -> Path:
    if os.environ.get("TTS_UPSTREAM_WHEELS"):
        return Path(os.environ["TTS_UPSTREAM_WHEELS"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tts-actor" / "upstream-wheels"


_TREES: dict[tuple[str, str], SourceTree] = {}


def wheel_tree(distribution: str, version: str) -> SourceTree:
    key = (distribution, version)
    if key not in _TREES:
        try:
            _TREES[key] = SourceTree(fetch_wheel(distribution, version, wheel_cache()))
        except NoNetwork as exc:
            pytest.skip(f"{exc}: the contract of {distribution} {version} is not checked in this run")
    return _TREES[key]


def installed_tree(entry: Upstream) -> SourceTree:
    top = entry.module.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{entry.distribution} is not installed here")
    return SourceTree(Path(next(iter(spec.submodule_search_locations))).parent)


def problem(tree: SourceTree, entry: Upstream) -> str | None:
    """What is wrong with ``entry`` in ``tree``; None when it holds."""
    where = f"{entry.module}.{entry.name}"
    if tree.module(entry.module) is None:
        return f"module {entry.module} does not exist"
    if entry.kind is Kind.GLOBAL:
        return None if tree.binds(entry.module, entry.name) else f"{where} is not bound at module level"
    owner, _, member = entry.name.partition(".")
    if entry.kind is Kind.CLASS:
        return None if tree.find_class(entry.module, owner) else f"class {where} does not exist"
    found = tree.find_class(entry.module, owner)
    if entry.kind is Kind.ATTRIBUTE:
        if found is None:
            return f"class {entry.module}.{owner} does not exist"
        return None if tree.has_attribute(found, member) else f"{where} is neither a class member nor set on self"
    # a callable: a function, a method, or a class (its constructor)
    if member:
        function = tree.method(found, member) if found else None
        names = parameters(function) if function else None
    elif found is not None:
        names = tree.constructor_parameters(found)
    else:
        function = tree.find_function(entry.module, owner)
        names = parameters(function) if function else None
    if names is None:
        return f"{where} does not exist"
    missing = [kw for kw in entry.kwargs if kw not in names]
    return f"{where} has no parameter(s) {missing} (it has {names})" if missing else None


def wheel_versions() -> list[tuple[str, str]]:
    return [(dist, version) for dist, versions in TESTED_VERSIONS.items() for version in versions]


@pytest.mark.parametrize(("distribution", "version"), wheel_versions(), ids="{0[0]}-{0[1]}".format)
def test_every_name_an_adapter_uses_exists_in_the_tested_wheel(distribution: str, version: str) -> None:
    tree = wheel_tree(distribution, version)
    entries = [e for e in DECLARED if e.distribution == distribution]
    assert entries, f"no adapter declares what it uses of {distribution}"
    problems = [f"{e.name}: {p}" for e in entries if not e.optional and (p := problem(tree, e))]
    assert problems == [], f"{distribution} {version} lacks what an adapter calls:\n" + "\n".join(problems)


def test_each_optional_name_exists_in_some_tested_version() -> None:
    optional = [e for e in DECLARED if e.optional]
    assert optional, "the XTTS checkpoint guard relies on Xtts._load_checkpoint (0.28+)"
    for entry in optional:
        versions = TESTED_VERSIONS[entry.distribution]
        found = [v for v in versions if problem(wheel_tree(entry.distribution, v), entry) is None]
        assert found, f"{entry.module}.{entry.name} is in none of {entry.distribution} {versions}"


@pytest.mark.parametrize("distribution", sorted({e.distribution for e in DECLARED} - set(TESTED_VERSIONS)), ids=str)
def test_every_name_an_adapter_uses_exists_in_the_installed_engine(distribution: str) -> None:
    entries = [e for e in DECLARED if e.distribution == distribution]
    problems = [f"{e.name}: {p}" for e in entries if (p := problem(installed_tree(e), e))]
    version = importlib.metadata.version(distribution)
    assert problems == [], f"{distribution} {version} lacks what an adapter calls:\n" + "\n".join(problems)


def test_a_renamed_keyword_would_be_caught(tmp_path: Path) -> None:
    """The checker itself: a parameter, a method, an attribute or a global that is not there is reported."""
    package = tmp_path / "engine"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("class Base:\n    def __init__(self):\n        self.sr = 1\n")
    (package / "model.py").write_text(
        "import torch\nfrom .base import Base\n\n"
        "class Model(Base):\n    def generate(self, text, audio_prompt=None, **kw):\n        self.conds = None\n"
    )
    tree = SourceTree(tmp_path)

    def check(name: str, kind: Kind = Kind.CALLABLE, kwargs: tuple[str, ...] = ()) -> str | None:
        return problem(tree, Upstream("engine", "engine.model", name, kind, kwargs))

    assert check("Model.generate", kwargs=("text", "audio_prompt")) is None
    assert "audio_prompt_path" in (check("Model.generate", kwargs=("audio_prompt_path",)) or "")
    assert check("Model.speak") is not None
    assert check("Model.sr", Kind.ATTRIBUTE) is None  # set by the base class
    assert check("Model.conds", Kind.ATTRIBUTE) is None
    assert check("Model.voice", Kind.ATTRIBUTE) is not None
    assert check("torch", Kind.GLOBAL) is None and check("hf_hub_download", Kind.GLOBAL) is not None


STAND_INS: list[tuple[Callable[..., Any], str, str, str]] = [
    (chatterbox_stand_ins.ChatterboxTTS.generate, "chatterbox-tts", "chatterbox.tts", "ChatterboxTTS.generate"),
    (
        chatterbox_stand_ins.ChatterboxMultilingualTTS.generate,
        "chatterbox-tts",
        "chatterbox.mtl_tts",
        "ChatterboxMultilingualTTS.generate",
    ),
    (chatterbox_stand_ins.StandInModel.from_local, "chatterbox-tts", "chatterbox.tts", "ChatterboxTTS.from_local"),
    (
        chatterbox_stand_ins.StandInModel.prepare_conditionals,
        "chatterbox-tts",
        "chatterbox.tts",
        "ChatterboxTTS.prepare_conditionals",
    ),
    (engine_stand_ins.StandInXtts.__init__, "coqui-tts", "TTS.tts.models.xtts", "Xtts.__init__"),
    (engine_stand_ins.StandInXtts.load_checkpoint, "coqui-tts", "TTS.tts.models.xtts", "Xtts.load_checkpoint"),
    (engine_stand_ins.StandInXtts.inference, "coqui-tts", "TTS.tts.models.xtts", "Xtts.inference"),
    (
        engine_stand_ins.StandInXtts.get_conditioning_latents,
        "coqui-tts",
        "TTS.tts.models.xtts",
        "Xtts.get_conditioning_latents",
    ),
    (engine_stand_ins.StandInXtts._load_checkpoint, "coqui-tts", "TTS.tts.models.xtts", "Xtts._load_checkpoint"),
    (
        engine_stand_ins.StandInServeEngine.__init__,
        "boson-multimodal",
        "boson_multimodal.serve.serve_engine",
        "HiggsAudioServeEngine.__init__",
    ),
    (
        engine_stand_ins.StandInServeEngine.generate,
        "boson-multimodal",
        "boson_multimodal.serve.serve_engine",
        "HiggsAudioServeEngine.generate",
    ),
]


@pytest.mark.parametrize(("stand_in", "distribution", "module", "name"), STAND_INS, ids=lambda v: str(v)[:60])
def test_stand_ins_take_the_parameters_of_the_newest_tested_version(
    stand_in: Callable[..., Any], distribution: str, module: str, name: str
) -> None:
    tree = wheel_tree(distribution, max(TESTED_VERSIONS[distribution], key=Version))
    owner, _, member = name.partition(".")
    found = tree.find_class(module, owner)
    function = tree.method(found, member) if found else None
    assert function is not None, f"{module}.{name} does not exist"
    real = parameters(function)
    ours = [p for p in inspect.signature(stand_in).parameters if p not in ("self", "cls")]
    assert set(ours) <= set(real), f"the stand-in takes {sorted(set(ours) - set(real))}, which upstream does not"


def test_the_extras_pin_exactly_the_tested_versions() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    requirements = [Requirement(r) for group in extras.values() for r in group]
    for distribution, versions in TESTED_VERSIONS.items():
        (pin,) = [r for r in requirements if r.name == distribution]
        assert all(pin.specifier.contains(v) for v in versions), f"{pin} refuses a tested version of {versions}"
        newest = Version(max(versions, key=Version))
        untested_later = Version(f"{newest.major}.{newest.minor}.{newest.micro + 1}")
        assert not pin.specifier.contains(str(untested_later)), f"{pin} admits {untested_later}, never tested"
        oldest = Version(min(versions, key=Version))
        if oldest.micro:
            earlier = Version(f"{oldest.major}.{oldest.minor}.{oldest.micro - 1}")
            assert not pin.specifier.contains(str(earlier)), f"{pin} admits {earlier}, never tested"
