"""Read an engine's source with ``ast``: which classes, parameters, attributes and module globals it defines.

No import of the engine (most pin their own torch); a wheel is unzipped and parsed.
Names bound by ``from x import y`` are followed to where they are defined, and class
members are looked up through the base classes that can be resolved in the source.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

NETWORK_TROUBLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ProxyError",
    "Network is unreachable",
    "ConnectTimeout",
    "ReadTimeoutError",
)


class NoNetwork(Exception):
    """PyPI could not be reached, so the wheel could not be fetched."""


def fetch_wheel(distribution: str, version: str, cache: Path) -> Path:
    """The unpacked wheel of ``distribution==version`` under ``cache`` (downloaded once, without dependencies)."""
    stem = f"{distribution.replace('-', '_')}-{version}"
    unpacked = cache / "src" / stem
    if (unpacked / ".complete").is_file():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"{stem}-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "--quiet", "-d", str(cache), f"{distribution}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        output = result.stdout + result.stderr
        wheels = sorted(cache.glob(f"{stem}-*.whl"))
        if not wheels:
            if any(sign in output for sign in NETWORK_TROUBLE):
                raise NoNetwork(f"pip could not reach the package index for {distribution}=={version}")
            raise RuntimeError(f"pip download {distribution}=={version} failed:\n{output[-2000:]}")
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(unpacked)
    (unpacked / ".complete").write_text(wheels[0].name)
    return unpacked


@dataclass(frozen=True)
class Found:
    """A class found in the source: the module it is defined in and its node."""

    module: str
    node: ast.ClassDef


class SourceTree:
    """The Python source under ``root`` (the directory holding the top-level packages)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @functools.cache  # noqa: B019 - one tree per test session
    def module(self, dotted: str) -> ast.Module | None:
        base = self.root.joinpath(*dotted.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return ast.parse(path.read_text(encoding="utf-8"), str(path))
        return None

    def _package_of(self, dotted: str) -> str:
        base = self.root.joinpath(*dotted.split("."))
        return dotted if (base / "__init__.py").is_file() else dotted.rpartition(".")[0]

    def _import_source(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self._package_of(module)
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        return f"{package}.{node.module}" if node.module else package

    def binds(self, module: str, name: str) -> bool:
        """Whether ``module`` binds ``name`` at its top level (definition, assignment or import)."""
        tree = self.module(module)
        if tree is None:
            return False
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
                return True
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return True
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
                return True
            if isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    bound = alias.asname or (alias.name.split(".")[0] if isinstance(node, ast.Import) else alias.name)
                    if bound == name:
                        return True
        return False

    def find_class(self, module: str, name: str, depth: int = 0) -> Found | None:
        tree = self.module(module)
        if tree is None or depth > 8:
            return None
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return Found(module, node)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        return self.find_class(self._import_source(module, node), alias.name, depth + 1)
        return None

    def find_function(self, module: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        tree = self.module(module)
        if tree is None:
            return None
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return node
        return None

    def bases(self, found: Found) -> list[Found]:
        """``found`` and the base classes that resolve in this source, nearest first."""
        chain, queue = [], [found]
        while queue:
            current = queue.pop(0)
            chain.append(current)
            for base in current.node.bases:
                if isinstance(base, ast.Name):
                    resolved = self.find_class(current.module, base.id)
                    if resolved is not None and resolved not in chain:
                        queue.append(resolved)
        return chain

    def method(self, found: Found, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        for cls in self.bases(found):
            for node in cls.node.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                    return node
        return None

    def has_attribute(self, found: Found, name: str) -> bool:
        """A class-level name (field, assignment, method or property) or ``self.<name> = ...`` in a method."""
        for cls in self.bases(found):
            for node in cls.node.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                    return True
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
                    return True
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    return True
            for node in ast.walk(cls.node):
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AnnAssign | ast.AugAssign):
                    targets = [node.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == name
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                    ):
                        return True
        return False

    def constructor_parameters(self, found: Found) -> list[str] | None:
        """``__init__``'s parameters, else a dataclass's fields (in order, bases first)."""
        init = self.method(found, "__init__")
        if init is not None:
            return parameters(init)
        fields: list[str] = []
        for cls in reversed(self.bases(found)):
            fields += [
                n.target.id for n in cls.node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            ]
        return fields or None


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Named parameters, without ``self``/``cls`` and without ``*args``/``**kwargs``."""
    args = function.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return [n for n in names if n not in ("self", "cls")]
