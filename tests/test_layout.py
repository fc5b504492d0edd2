"""Architecture tests: the import graph of ``specperf`` and the size of its modules and functions.

Read statically with :mod:`ast` (nothing is imported), so they are fast and hold for every code path, not only the
ones a test happens to run. What they protect:

- no import cycle: each subpackage can be read, tested and imported on its own;
- the torch-free layers (configuration, data, analysis, output) stay free of torch and transformers, so that
  ``pytest`` in any project, ``specperf compare`` and ``specperf report`` start fast;
- the pipeline runs one way, config/data -> engine -> bench -> analysis -> output, with the plugin on top;
- modules and functions stay small enough to review, and none imports another's underscore (private) name;
- perf/ holds what users run, nothing else: maintainers' studies live in tools/, test-only plugins in
  tests/plugins/.

Only module-level imports count: those that run when the module is imported, including inside top-level ``try``,
``if`` (but not ``if TYPE_CHECKING:``), ``with`` and class bodies. Imports inside functions are deferred on purpose
(that is how torch is kept out of the lean layers) and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "specperf"
PACKAGE_DIR = ROOT / PACKAGE

HEAVY = frozenset({"torch", "transformers"})
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Modules that must never reach torch or transformers through module-level imports: what the plugin, the
# ``specperf`` CLI and ``import specperf`` load in a run that decodes nothing. Single modules, then whole layers.
LEAN_MODULES = ("specperf", "specperf.errors", "specperf.records", "specperf.cli")
LEAN_LAYERS = ("specperf.config", "specperf.data", "specperf.analysis", "specperf.output", "specperf.pytest_plugin")
# (layer, the layers it must never import, even transitively)
PIPELINE = (
    ("specperf.config", ("specperf.engine", "specperf.bench", "specperf.analysis", "specperf.output",
                         "specperf.pytest_plugin")),
    ("specperf.data", ("specperf.engine", "specperf.bench", "specperf.analysis", "specperf.output",
                       "specperf.pytest_plugin")),
    ("specperf.analysis", ("specperf.engine", "specperf.bench", "specperf.output", "specperf.pytest_plugin")),
    ("specperf.output", ("specperf.engine", "specperf.bench", "specperf.pytest_plugin")),
)


# =========================================================================== reading the package


def module_name(path: Path, root: Path = ROOT) -> str:
    """``specperf/a/b.py`` -> ``specperf.a.b``; ``specperf/a/__init__.py`` -> ``specperf.a``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package."""
    return {module_name(p, package_dir.parent): p for p in sorted(package_dir.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``: never true at run time."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(body: Iterable[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run on import: top level, in top-level blocks and class bodies, not in
    functions and not under ``if TYPE_CHECKING:`` (its ``else`` branch does run)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from module_level_imports(node.body)
            yield from module_level_imports(node.orelse)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from module_level_imports(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from module_level_imports(node.body)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (resolving ``from . import x`` and ``from ..a import b``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _ancestors(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages Python imports before ``a.b.c``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _known(name: str, modules: Mapping[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module of the package (``import specperf.x.func`` is rare)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imported_names(node: ast.Import | ast.ImportFrom, module: str, modules: Mapping[str, Path]) -> list[str]:
    """The absolute modules one statement imports: ``from specperf.x import y`` names ``specperf.x.y`` when that
    is a submodule, else ``specperf.x``; third-party names come back as written."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _absolute(node, module, modules.get(module, Path()).name == "__init__.py")
    found = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.append(submodule if submodule in modules else base)
    return found


@dataclass
class ImportGraph:
    """Module -> the package modules it imports at module level, and the third-party top-level names."""

    edges: dict[str, set[str]] = field(default_factory=dict)
    external: dict[str, set[str]] = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        return sum(len(targets) for targets in self.edges.values())


def _targets(name: str, importer: str, modules: Mapping[str, Path]) -> set[str]:
    """A package module and its parent packages (their ``__init__`` runs first), less the importer's own
    ancestors: those are already in ``sys.modules`` when the importer runs, so importing them again is a no-op."""
    target = _known(name, modules)
    own = set(_ancestors(importer))
    found = {target} | {parent for parent in _ancestors(target) if parent not in own}
    return {t for t in found if t in modules and t != importer}


def build_graph(modules: Mapping[str, Path], package: str = PACKAGE) -> ImportGraph:
    """Parse every module; resolve each module-level import to package modules or a third-party name."""
    graph = ImportGraph()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges, external = graph.edges.setdefault(module, set()), graph.external.setdefault(module, set())
        for node in module_level_imports(tree.body):
            for name in imported_names(node, module, modules):
                if name == package or name.startswith(package + "."):
                    edges |= _targets(name, module, modules)
                elif name and not (isinstance(node, ast.ImportFrom) and node.level):
                    external.add(name.split(".")[0])
    return graph


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    found = package_files()
    assert len(found) > 10, f"no package found under {PACKAGE_DIR}"
    return found


@pytest.fixture(scope="module")
def graph(modules: dict[str, Path]) -> ImportGraph:
    return build_graph(modules)


# =========================================================================== graph searches


def find_cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), each as a closed chain."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_cycle_in(component, edges) for component in components]


def _cycle_in(component: set[str], edges: Mapping[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search inside the component."""
    start = min(component)
    parents: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, set()) & component):
            if nxt == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(parents[chain[-1]])
                return [start, *reversed(chain[:-1]), start]
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle in component {sorted(component)}")  # impossible for a Tarjan component


def chain_to(edges: Mapping[str, set[str]], start: str, goal: Callable[[str], bool]) -> list[str] | None:
    """A shortest import chain from ``start`` to a module for which ``goal(module)`` holds, or None."""
    parents: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if goal(node):
            chain = [node]
            while parents[chain[-1]] is not None:
                chain.append(parents[chain[-1]])  # type: ignore[arg-type]
            return chain[::-1]
        for nxt in sorted(edges.get(node, ())):
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return None


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


# =========================================================================== the reader itself


def test_reader_keeps_runtime_imports_only(tmp_path: Path) -> None:
    """The rules above, on a made-up package: TYPE_CHECKING and function-level imports do not count."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nimport os.path\nfrom .sub import b\n"
        "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"
        "if TYPE_CHECKING:\n    import torch\nelse:\n    import json\n"
        "def f():\n    import transformers\n")
    found = build_graph(package_files(pkg), package="pkg")
    assert found.edges["pkg.a"] == {"pkg.sub.b", "pkg.sub"}
    assert found.external["pkg.a"] == {"typing", "os", "numpy", "json"}
    assert found.edges["pkg.sub"] == {"pkg.sub.b"}  # the package's own __init__ is not an edge of its submodule
    assert found.edges["pkg.sub.b"] == set()


def test_cycle_finder_reports_a_closed_chain() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# =========================================================================== the rules


def test_graph_summary(graph: ImportGraph) -> None:
    """Shown with ``-s``: how big the graph is, and the most imported modules."""
    fan_in: dict[str, int] = {}
    for targets in graph.edges.values():
        for target in targets:
            fan_in[target] = fan_in.get(target, 0) + 1
    top = sorted(fan_in.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    print(f"\nspecperf import graph: {len(graph.edges)} modules, {graph.n_edges} module-level edges; most imported: "
          + ", ".join(f"{name} ({n})" for name, n in top))
    assert graph.n_edges > 0


def test_no_import_cycle(graph: ImportGraph) -> None:
    cycles = find_cycles(graph.edges)
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_lean_layers_never_reach_torch_or_transformers(graph: ImportGraph) -> None:
    offenders = []
    lean = [m for m in graph.edges if m in LEAN_MODULES or any(in_layer(m, layer) for layer in LEAN_LAYERS)]
    assert set(LEAN_MODULES) <= set(lean), f"missing lean modules: {sorted(set(LEAN_MODULES) - set(lean))}"
    for module in sorted(lean):
        chain = chain_to(graph.edges, module, lambda m: bool(graph.external.get(m, set()) & HEAVY))
        if chain is not None:
            heavy = sorted(graph.external[chain[-1]] & HEAVY)
            offenders.append(" -> ".join([*chain, "/".join(heavy)]))
    assert not offenders, "torch-free modules that import torch or transformers at module level:\n" + \
        "\n".join(offenders)


def test_pipeline_runs_one_way(graph: ImportGraph) -> None:
    offenders = []
    for layer, forbidden in PIPELINE:
        def is_forbidden(m: str, forbidden: tuple[str, ...] = forbidden) -> bool:
            return any(in_layer(m, f) for f in forbidden)

        for module in sorted(m for m in graph.edges if in_layer(m, layer)):
            chain = chain_to(graph.edges, module, is_forbidden)
            if chain is not None:
                offenders.append(f"{layer} must not import {chain[-1]}: " + " -> ".join(chain))
    assert not offenders, "imports against the pipeline direction:\n" + "\n".join(offenders)


def test_modules_are_small(modules: dict[str, Path]) -> None:
    offenders = []
    for path in modules.values():
        n_lines = len(path.read_text(encoding="utf-8").splitlines())
        if n_lines > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(ROOT)}: {n_lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_functions_are_small(modules: dict[str, Path]) -> None:
    offenders = []
    for path in modules.values():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_no_private_name_is_imported_across_modules(modules: dict[str, Path]) -> None:
    """A leading underscore says "this module's own": a name another module needs gets a public name. Every import
    counts here, deferred ones included."""
    offenders = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(node, module, path.name == "__init__.py")
            if source != PACKAGE and not source.startswith(f"{PACKAGE}."):
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {source}"
                          for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


# =========================================================================== the benchmark folder

# What `pytest perf/` collects and what users run by hand (perf/bench_engine.py); perf/conftest.py may join them.
PERF_FILES = frozenset({"test_speculative.py", "specperf.yaml", "bench_engine.py", "conftest.py"})


def test_perf_holds_benchmarks_only() -> None:
    found = {p.name for p in (ROOT / "perf").iterdir() if p.name != "__pycache__" and not p.name.startswith(".")}
    assert {"test_speculative.py", "specperf.yaml"} <= found, f"perf/ lacks the suite: {sorted(found)}"
    others = sorted(found - PERF_FILES)
    assert not others, (f"perf/ holds benchmarks only, not {', '.join(others)}; fix: move a maintainers' study to "
                        "tools/ and a test-only plugin to tests/plugins/")
