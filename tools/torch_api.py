"""Record the public API of an installed torch, so tests can check specperf against the oldest torch it allows.

pyproject allows a range of torch (``torch>=FLOOR,<3``), but CI installs one new CPU build, so a call to an API that is
newer than the floor would pass CI and break for a user on the floor. CI cannot install the floor itself: PyPI's
Linux wheel of an old torch is a CUDA build of about 900 MB plus the nvidia-* libraries. Instead this tool writes the
floor's API once, as a committed text file of dotted names, and ``tests/test_torch_floor.py`` checks every ``torch.``
name that ``specperf/`` uses against it, statically.

Usage, when the floor in pyproject changes (or the snapshot misses a module specperf starts to import)::

    python3 -m venv /tmp/floor && /tmp/floor/bin/pip install torch==2.7.0 numpy   # the new floor; ~5.5 GB of disk
    /tmp/floor/bin/python tools/torch_api.py         # writes tests/data/torch-2.7.0-api.txt
    git rm tests/data/torch-OLD-api.txt              # the test wants exactly one snapshot
    rm -rf /tmp/floor

No GPU is needed: importing a CUDA build of torch on a machine without one works, once the nvidia-* wheels its
metadata asks for are installed (it loads their libraries at import).

What is recorded: ``dir()`` of ``torch`` and of every torch module reachable from it by attribute, recursively, after
importing every module that specperf's ``torch.`` chains name (so a lazily loaded one such as ``torch.onnx`` is walked
once specperf uses it). Names starting with ``_`` are left out except ``__version__``; so are attributes that are
modules from outside torch (``torch.os``) or another torch module under a second name. ``torch.ops`` and
``torch.classes`` resolve their members lazily, so they are recorded without members. A module's members appear as
``module.name`` lines, so in the snapshot a name with members is a module, and a name without is a leaf: a class, a
function or a value.

The walker below, :func:`torch_uses`, reads source with :mod:`ast` only (it imports nothing), so the test can use it in
any environment.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import platform
import re
import sys
import types
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "specperf"
DATA_DIR = ROOT / "tests" / "data"
# Namespaces whose dir() shows only what has been loaded so far: their members cannot be listed.
LAZY_NAMESPACES = frozenset({"torch.ops", "torch.classes"})
HEADER = re.compile(r"^# torch (\S+)")


@dataclass(frozen=True)
class Use:
    """One ``torch.`` name in a source file: ``name`` is the dotted chain with import aliases resolved."""

    path: str
    line: int
    name: str


# =========================================================================== reading the source


def _bindings(tree: ast.AST) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """The names a file binds to torch or a part of it (``F`` -> ``torch.nn.functional``) and the imports themselves.

    Scope-blind: an alias bound anywhere in the file (inside a function too) counts everywhere in it.
    """
    aliases: dict[str, str] = {}
    imported: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name != "torch" and not alias.name.startswith("torch."):
                    continue
                imported.append((node.lineno, alias.name))
                # `import torch.nn` binds `torch`; `import torch.nn as tnn` binds `tnn` to torch.nn.
                aliases[alias.asname or "torch"] = alias.name if alias.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module != "torch" and not node.module.startswith("torch."):
                continue
            for alias in node.names:
                if alias.name == "*":
                    continue
                name = f"{node.module}.{alias.name}"
                imported.append((node.lineno, name))
                aliases[alias.asname or alias.name] = name
    return aliases, imported


def _dotted(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> (``a``, [``b``, ``c``]); None when the chain starts at a call, a subscript, anything not a name."""
    attrs: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        attrs.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    return current.id, attrs[::-1]


class _ChainFinder(ast.NodeVisitor):
    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases
        self.found: list[tuple[int, str]] = []

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _dotted(node)
        if chain is None:  # `torch.zeros(3).sum`: what follows a call is a tensor's attribute, not torch's API
            self.generic_visit(node)
            return
        root, attrs = chain
        if root in self.aliases:
            self.found.append((node.lineno, ".".join([self.aliases[root], *attrs])))
        # The inner nodes of a chain of names are its own prefixes: nothing more to find below.


def torch_uses(source: str, path: str = "<string>") -> list[Use]:
    """Every ``torch.a.b`` chain in ``source``, each import of a torch module or name included, with aliases resolved.

    Only chains of plain names rooted at a torch import are found: what follows a call or a subscript, ``getattr``
    with a string, and names inside string annotations are out of reach.
    """
    tree = ast.parse(source, filename=path)
    aliases, imported = _bindings(tree)
    finder = _ChainFinder(aliases)
    finder.visit(tree)
    return [Use(path, line, name) for line, name in sorted({*imported, *finder.found})]


def package_uses(package_dir: Path = PACKAGE_DIR) -> list[Use]:
    """:func:`torch_uses` of every ``.py`` file under ``package_dir``, paths relative to the repository root."""
    uses: list[Use] = []
    for path in sorted(package_dir.rglob("*.py")):
        uses.extend(torch_uses(path.read_text(encoding="utf-8"), str(path.relative_to(package_dir.parent))))
    return uses


# =========================================================================== checking against a snapshot


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file read back: the torch ``version`` it was written from, its ``names``, and which are modules."""

    version: str
    names: frozenset[str]
    modules: frozenset[str]  # the names that have members in the snapshot


def read_snapshot(path: Path) -> Snapshot:
    lines = path.read_text(encoding="utf-8").splitlines()
    match = HEADER.match(lines[0]) if lines else None
    if match is None:
        raise ValueError(f"{path}: the first line must be '# torch VERSION', as tools/torch_api.py writes it")
    names = frozenset(line for line in lines if line and not line.startswith("#"))
    return Snapshot(match.group(1), names, frozenset(name.rpartition(".")[0] for name in names))


def first_missing(name: str, snapshot: Snapshot) -> str | None:
    """The shortest prefix of ``name`` that ``snapshot`` lacks, or None when it resolves.

    A prefix is checked while the one before it is a module; at the first leaf (a class, a function or a value) the
    check stops, since attributes of classes and objects are not recorded.
    """
    parts = name.split(".")
    for end in range(2, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix not in snapshot.names:
            return prefix
        if prefix not in snapshot.modules:
            return None
    return None


# =========================================================================== recording an installed torch


def _is_public(name: str) -> bool:
    return not name.startswith("_") or name == "__version__"


def _members(module: types.ModuleType, path: str) -> Iterator[tuple[str, types.ModuleType | None]]:
    """(dotted name, the module to walk next or None) for each public member of ``module``."""
    for name in sorted(dir(module)):
        if not _is_public(name):
            continue
        dotted = f"{path}.{name}"
        try:
            value = getattr(module, name)
        except Exception:  # listed by dir() but failing to load (an optional dependency): it still exists
            yield dotted, None
            continue
        if not isinstance(value, types.ModuleType):
            yield dotted, None
        elif value.__name__ == dotted:
            yield dotted, None if dotted in LAZY_NAMESPACES else value
        # else: a module imported under a second name, from torch or outside it: not torch's API at this path


def _import_prefixes(names: Iterable[str]) -> None:
    """Import each module that a used name passes through, so lazily loaded submodules are walked too."""
    for name in sorted(set(names)):
        parts = name.split(".")
        for end in range(2, len(parts) + 1):
            try:
                importlib.import_module(".".join(parts[:end]))
            except ImportError:
                break


def record(imports: Iterable[str]) -> tuple[str, list[str]]:
    """The installed torch's version and its public names (module docstring: what is walked)."""
    import torch

    _import_prefixes(imports)
    names = ["torch"]
    queue: deque[tuple[str, types.ModuleType]] = deque([("torch", torch)])
    walked = {"torch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases warn on access
        while queue:
            path, module = queue.popleft()
            for dotted, submodule in _members(module, path):
                names.append(dotted)
                if submodule is not None and dotted not in walked:
                    walked.add(dotted)
                    queue.append((dotted, submodule))
    return str(torch.__version__), sorted(set(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", metavar="FILE", type=Path, default=None,
                        help="where to write (default: tests/data/torch-VERSION-api.txt, VERSION without +local)")
    parser.add_argument("--import", dest="imports", metavar="MODULE", action="append", default=[],
                        help="also import and walk this torch module (default: those specperf's chains name)")
    args = parser.parse_args(argv)
    version, names = record([use.name for use in package_uses()] + args.imports)
    out: Path = args.out or DATA_DIR / f"torch-{version.split('+')[0]}-api.txt"
    header = [
        f"# torch {version}",
        f"# Written by tools/torch_api.py on Python {platform.python_version()}, {sys.platform} {platform.machine()}:"
        " regenerate it, don't edit it.",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + names) + "\n", encoding="utf-8")
    print(f"{out}: {len(names)} names from torch {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
