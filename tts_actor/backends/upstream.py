"""What each adapter relies on in its engine's package, as data, so a rename upstream fails a test, not a request.

Every adapter module lists the classes, functions, keyword arguments, attributes
and module globals it touches in ``UPSTREAM``. ``tests/unit/test_upstream_contracts.py``
downloads the tested wheels (``TESTED_VERSIONS``) without their dependencies,
parses their source with ``ast`` and checks each entry; engines installed here
(transformers, piper, uroman) are checked against the installed source.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class Kind(enum.StrEnum):
    CLASS = "class"  # a class defined in (or imported into) the module
    CALLABLE = "callable"  # a function or method; ``kwargs`` must be named parameters (a class: its __init__)
    ATTRIBUTE = "attribute"  # ``Class.attr``: set on ``self`` in a method, or a class-level / dataclass field
    GLOBAL = "global"  # a name bound at module level that an adapter swaps for the length of a call


@dataclass(frozen=True)
class Upstream:
    """One symbol of an engine's package that an adapter uses."""

    distribution: str  # the PyPI name, a key of TESTED_VERSIONS or an installed distribution
    module: str  # dotted module path
    name: str  # qualified name inside the module: ``Class``, ``Class.method``, ``function``
    kind: Kind = Kind.CALLABLE
    kwargs: tuple[str, ...] = ()
    # only in some tested versions; the adapter checks for it at run time (it must exist in at least one)
    optional: bool = False


# The versions the contract tests read, per distribution; pyproject.toml's extras admit exactly this range.
TESTED_VERSIONS: dict[str, tuple[str, ...]] = {
    "chatterbox-tts": ("0.1.5", "0.1.7"),
    "coqui-tts": ("0.27.4", "0.28.0"),
    "boson-multimodal": ("0.1.1",),
}


@contextlib.contextmanager
def swapped_global(module: Any, name: str, replacement: Any) -> Iterator[None]:
    """Rebind ``module.<name>`` for the length of one call, then restore it.

    How an adapter keeps an engine off the network or off the model cache where the
    engine offers no parameter for it: the engine's module looks the name up at call
    time, so only that module sees the replacement. Calls run on the backend's own
    worker thread, one at a time.
    """
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)
