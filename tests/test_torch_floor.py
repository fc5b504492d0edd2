"""Every ``torch.`` name that ``specperf/`` uses exists in the oldest torch that pyproject allows.

CI installs one new CPU torch, so an API newer than the floor would pass there and fail for a user on the floor (as
``torch.OutOfMemoryError``, new in 2.5, once did under a floor of 2.4). Installing the floor in CI costs too much (a
~900 MB CUDA wheel plus its nvidia-* libraries), so the floor's API is a committed snapshot, written by
``tools/torch_api.py`` from the real install, and the check is static: :mod:`ast`, nothing imported.

In scope: chains of names rooted at a torch import (``torch.cuda.memory_allocated``, ``F.softmax`` after
``import torch.nn.functional as F``, ``from torch.cuda import synchronize``), each checked as far as torch's modules
go. Out of scope: attributes of classes (``torch.Tensor.add_``), what follows a call or a subscript
(``torch.zeros(3).new_thing()``: tensor methods), ``getattr`` with a string, and behaviour that changed without a
name changing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tools.torch_api import DATA_DIR, ROOT, Snapshot, Use, first_missing, package_uses, read_snapshot, torch_uses

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which pyproject allows, has no tomllib
    tomllib = pytest.importorskip("tomli")

REGENERATE = "regenerate the snapshot with tools/torch_api.py under the floor's torch (its docstring says how)"


def torch_floor(pyproject: Path = ROOT / "pyproject.toml") -> Version:
    """The ``>=`` bound of the torch requirement in pyproject's dependencies."""
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    requirement = next(Requirement(line) for line in dependencies if Requirement(line).name == "torch")
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    assert len(floors) == 1, f"pyproject's {requirement} needs exactly one '>=' bound: the floor this test checks"
    return floors[0]


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    paths = sorted(DATA_DIR.glob("torch-*-api.txt"))
    assert len(paths) == 1, f"want exactly one torch API snapshot in {DATA_DIR}, found {[p.name for p in paths]}"
    return read_snapshot(paths[0])


def missing(uses: list[Use], snapshot: Snapshot) -> list[str]:
    found = ((use, first_missing(use.name, snapshot)) for use in uses)
    return [f"{use.path}:{use.line}: {use.name} ({absent} is not in torch {snapshot.version})"
            for use, absent in found if absent is not None]


def test_snapshot_is_of_the_floor(snapshot: Snapshot) -> None:
    recorded = Version(snapshot.version)  # "2.7.0+cu126": the local build tag does not change the API
    floor = torch_floor()
    assert Version(recorded.base_version) == floor, (
        f"pyproject's torch floor is {floor} but the API snapshot is of torch {snapshot.version}: {REGENERATE}")


def test_specperf_uses_only_the_floors_api(snapshot: Snapshot) -> None:
    uses = package_uses()
    assert len(uses) > 100, "the walker found almost no torch names in specperf/: it is broken, not the code clean"
    absent = missing(uses, snapshot)
    assert not absent, (
        f"specperf uses torch names that torch {snapshot.version}, the floor in pyproject, lacks. Guard them, find "
        "an older spelling, or raise the floor. If the name does exist there, it is in a lazily loaded module the "
        f"snapshot has not walked: {REGENERATE}.\n" + "\n".join(absent))


@pytest.mark.parametrize(("source", "names"), [
    ("import torch\ntorch.cuda.memory_allocated(device)\n", ["torch", "torch.cuda.memory_allocated"]),
    ("import torch.nn.functional as F\nF.softmax(x, -1)\n",
     ["torch.nn.functional", "torch.nn.functional.softmax"]),
    ("import torch.nn\ntorch.nn.Linear\n", ["torch.nn", "torch.nn.Linear"]),
    ("from torch import nn\nnn.functional.gelu\n", ["torch.nn", "torch.nn.functional.gelu"]),
    ("from torch.nn import functional as F\nF.gelu\n", ["torch.nn.functional", "torch.nn.functional.gelu"]),
    ("from torch.cuda import synchronize as sync\nsync()\n", ["torch.cuda.synchronize"]),
    # A tensor's methods after a call are out of scope: only the chain up to the call is torch's API.
    ("import torch\ntorch.zeros(3).to(device).new_thing()\n", ["torch", "torch.zeros"]),
    # Names from other packages, and attributes of other objects, are not torch's.
    ("import numpy as np\nimport torchvision\nnp.zeros\ntorchvision.ops\nx.torch.cuda\n", []),
    ("def f():\n    import torch\n    return torch.Generator\n", ["torch", "torch.Generator"]),
])
def test_walker_resolves_aliases(source: str, names: list[str]) -> None:
    assert sorted({use.name for use in torch_uses(source)}) == names


def test_walker_reports_file_and_line() -> None:
    uses = torch_uses("import torch\n\nx = torch.inference_mode\n", "a.py")
    assert uses == [Use("a.py", 1, "torch"), Use("a.py", 3, "torch.inference_mode")]


@pytest.mark.parametrize(("source", "absent"), [
    # Each name is absent from torch 2.7.0 and present in 2.13.0: a name missing from a module that is in the snapshot,
    ("import torch\ntorch.compiler.nested_compile_region(f)\n", "torch.compiler.nested_compile_region"),
    # and names reached by alias (torch.accelerator's memory API, a later torch.cuda helper, a later F function).
    ("from torch import accelerator\naccelerator.memory_allocated()\n", "torch.accelerator.memory_allocated"),
    ("import torch.cuda as tc\ntc.caching_allocator_disabled()\n", "torch.cuda.caching_allocator_disabled"),
    ("from torch.nn.functional import grouped_mm\n", "torch.nn.functional.grouped_mm"),
])
def test_walker_flags_names_newer_than_the_floor(snapshot: Snapshot, source: str, absent: str) -> None:
    uses = torch_uses(source, "fake.py")
    assert {first_missing(use.name, snapshot) for use in uses} - {None} == {absent}
    assert f"fake.py:{uses[-1].line}: {uses[-1].name} ({absent} is not in torch {snapshot.version})" in missing(
        uses, snapshot)


def test_names_the_floor_has_resolve(snapshot: Snapshot) -> None:
    source = ("import torch\nimport torch.nn.functional as F\n"
              "torch.OutOfMemoryError\ntorch.cuda.synchronize\nF.softmax\ntorch.version.cuda\n"
              "torch.accelerator.current_accelerator\n"  # transformers >= 5.19 calls it (before 2.7 it can raise)
              "torch.Tensor.add_\n")  # attributes of a class are not recorded: the check stops at the class
    assert missing(torch_uses(source), snapshot) == []


def test_floor_is_read_from_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy>=1.26", "torch>=2.9,<3"]\n', encoding="utf-8")
    assert torch_floor(pyproject) == Version("2.9")
