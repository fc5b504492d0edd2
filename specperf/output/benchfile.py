"""Read a pytest-benchmark ``--benchmark-json`` file written by specperf: one reader for the plugin's baseline,
``specperf compare``, ``specperf merge`` and ``specperf report``. Free of torch and pytest.

An entry whose ``extra_info`` holds its ``case_id`` and nothing else is an *errored* case: the plugin names each
case before it runs, so a case that raised after pytest-benchmark's timed rounds still leaves an entry, without any
metric. Readers keep such ids apart (:attr:`BenchRun.errored`): a merge counts them as present, comparisons and
reports skip them and say so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from specperf.errors import ConfigError

log = logging.getLogger(__name__)

_SHOW_IDS = 4  # case ids quoted per side when two runs share none


@dataclass(frozen=True)
class BenchRun:
    """The specperf part of a pytest-benchmark ``--benchmark-json`` file."""

    path: Path
    cases: dict[str, dict[str, Any]]  # case id -> extra_info, for every case that recorded its metrics
    machine_info: dict[str, Any] = field(default_factory=dict)
    commit_info: dict[str, Any] = field(default_factory=dict)
    datetime: str | None = None
    errored: tuple[str, ...] = ()  # case ids whose entry holds no metric: the case raised before recording them


def _read_json(file: Path, role: str) -> Any:
    if not file.is_file():
        raise ConfigError(f"{role} {file} does not exist; fix: pass the file written by "
                          "`pytest perf/ --benchmark-json=FILE`")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{role} {file} is not valid JSON ({exc}); fix: pass the file written by "
                          "`pytest perf/ --benchmark-json=FILE` (was the run interrupted?)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {role} {file} ({exc.strerror or exc}); "
                          "fix: pass a readable file") from None


@functools.lru_cache(maxsize=1)
def installed_benchmark_version() -> str | None:
    """The installed pytest-benchmark's version, None if it is not installed."""
    try:
        return metadata.version("pytest-benchmark")
    except metadata.PackageNotFoundError:
        return None


def _major(version: str) -> int | None:
    match = re.match(r"\s*v?(\d{1,6})(?:\.|$)", version)
    return int(match[1]) if match else None


def _check_version(data: dict[str, Any], file: Path, role: str) -> None:
    """Refuse a file written by another major version of pytest-benchmark (a file without a version passes)."""
    version, installed = data.get("version"), installed_benchmark_version()
    if version is None or installed is None:
        return
    major = _major(version) if isinstance(version, str) else None
    if major is None:
        raise ConfigError(f"{role} {file} has an unreadable pytest-benchmark version {version!r} (expected e.g. "
                          f"{installed!r}); fix: pass the file written by `pytest perf/ --benchmark-json=FILE`")
    if major != _major(installed):
        raise ConfigError(f"{role} {file} was written by pytest-benchmark {version}, but pytest-benchmark "
                          f"{installed} is installed, and the JSON format may change between major versions; fix: "
                          f"re-run the reference with pytest-benchmark {_major(installed)}.x installed (or install "
                          f"pytest-benchmark {major}.x to read this file)")


def _few(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOW_IDS])
    return f"{shown}, ... ({len(ids)} in all)" if len(ids) > _SHOW_IDS else shown


def require_shared_cases(run: BenchRun, case_ids: Sequence[str], *, role: str, other: str, fix: str) -> list[str]:
    """The ids of ``case_ids`` that ``run`` holds; a ConfigError when it holds none of them (another suite's file).

    ``role`` names ``run``'s file and ``other`` what ``case_ids`` belong to, e.g. "this run"; ``fix`` ends the
    message. An empty ``case_ids`` checks nothing.
    """
    shared = [case_id for case_id in case_ids if case_id in run.cases]
    if case_ids and not shared:
        raise ConfigError(f"{role} {run.path} shares no case with {other}: it holds {_few(list(run.cases))}; "
                          f"{other} has {_few(list(case_ids))}. It comes from another suite, or from another "
                          f"selection of drafts, k and slices; fix: {fix}")
    return shared


def load_bench_json(path: str | Path, *, role: str = "benchmark file") -> BenchRun:
    """Read a ``--benchmark-json`` file: its specperf cases (keyed by ``extra_info.case_id``), machine and commit.

    Entries without a ``case_id`` (other benchmarks in the same run) are skipped. A missing or malformed file, one
    without specperf cases, or one written by another major version of pytest-benchmark (its top-level
    ``version``) is a ConfigError that says what to pass instead; ``role`` names the file in it.
    """
    file = Path(path)
    return bench_run(_read_json(file, role), file, role)


def read_bench_document(path: str | Path, *, role: str) -> tuple[dict[str, Any], BenchRun]:
    """The parsed JSON document of a ``--benchmark-json`` file and its validated :class:`BenchRun`, read once."""
    file = Path(path)
    data = _read_json(file, role)
    return data, bench_run(data, file, role)


def bench_run(data: Any, file: Path, role: str) -> BenchRun:
    """Validate a parsed ``--benchmark-json`` document (see :func:`load_bench_json`)."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ConfigError(f"{role} {file} has no 'benchmarks' list: it is not a pytest-benchmark JSON "
                          "file; fix: pass the file written by `pytest perf/ --benchmark-json=FILE`")
    _check_version(data, file, role)
    cases: dict[str, dict[str, Any]] = {}
    errored: list[str] = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        if isinstance(info, dict) and isinstance(info.get("case_id"), str):
            if is_errored(info):
                errored.append(info["case_id"])
            else:
                cases[info["case_id"]] = info
    if not cases and not errored:
        raise ConfigError(f"{role} {file} holds no specperf cases (no extra_info.case_id); fix: write it "
                          "with `pytest perf/ --benchmark-json=FILE` with specperf installed")
    if errored:
        log.warning("%s %s: %d case(s) errored before recording their metrics, skipped: %s (the run's pytest log "
                    "names each error)", role, file, len(errored), _few(errored))
    machine, commit = data.get("machine_info"), data.get("commit_info")
    return BenchRun(file, cases, machine if isinstance(machine, dict) else {},
                    commit if isinstance(commit, dict) else {}, data.get("datetime"), tuple(errored))


def is_errored(extra_info: Mapping[str, Any]) -> bool:
    """True for the entry of a case that errored before recording its metrics: a ``case_id`` and nothing else."""
    return set(extra_info) <= {"case_id"}


def baseline_files(paths: Sequence[str | Path]) -> list[Path]:
    """The JSON files of ``paths``: files as given, directories searched recursively for ``*.json`` (a
    pytest-benchmark storage folder, or a folder of main's last runs). A ConfigError names a path that is neither."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.rglob("*.json"))
            if not found:
                raise ConfigError(f"baseline directory {path} holds no .json file; fix: point it at a folder of "
                                  "`pytest perf/ --benchmark-json=FILE` outputs")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"baseline {path} does not exist; fix: pass a --benchmark-json file or a folder of them")
    return files


_BASELINE_FIX = ("pass the --benchmark-json of a run of the same suite with an overlapping selection "
                 "(--specperf-drafts, --specperf-k, --specperf-slice), or drop --specperf-baseline")


def read_baseline(paths: str | Path | Sequence[str | Path], case_ids: Sequence[str] | None = None, *,
                  role: str = "baseline file", other: str = "this run",
                  fix: str = _BASELINE_FIX) -> list[BenchRun]:
    """The baseline runs of ``paths``, oldest first (by the file's datetime, then name); see :func:`load_baseline`."""
    listed = [paths] if isinstance(paths, (str, Path)) else list(paths)
    runs = [load_bench_json(file, role=role) for file in baseline_files(listed)]
    runs.sort(key=lambda run: (run.datetime or "", str(run.path)))
    if case_ids is not None:
        require_shared_cases(runs[-1], case_ids, role=role, other=other, fix=fix)
    return runs


def baseline_history(runs: Sequence[BenchRun]) -> dict[str, list[dict[str, Any]]]:
    """Case id -> its extra_info in each run that recorded it, in the order of ``runs`` (errored cases left out)."""
    history: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for case_id, info in run.cases.items():
            history.setdefault(case_id, []).append(info)
    return history


def load_baseline(paths: str | Path | Sequence[str | Path], case_ids: Sequence[str] | None = None, *,
                  role: str = "baseline file", other: str = "this run",
                  fix: str = _BASELINE_FIX) -> dict[str, list[dict[str, Any]]]:
    """Case id -> its extra_info in each baseline run, oldest run first (by the file's datetime, then name).

    ``paths`` are ``--benchmark-json`` files written by specperf, or directories of them. With ``case_ids`` (this
    run's draft cases), a set of files that holds none of them is a ConfigError naming a few ids on each side: it
    was written by another suite, and gating against it would silently check floors only. ``role``, ``other`` and
    ``fix`` word that error (the plugin's defaults; ``specperf compare`` names its OLD and NEW files). A case that
    errored in a run (no metrics) is left out of that run, with a logged warning.
    """
    return baseline_history(read_baseline(paths, case_ids, role=role, other=other, fix=fix))


# =========================================================================== the kind of machine

# (name, where in machine_info): what two runs must share for their results to be compared. The deterministic gates
# (acceptance within 0.002, exact match) assume bit-identical half-precision results: the GPU model, torch and its
# CUDA and cuDNN builds choose the kernels, transformers the model code; the timing gate also needs the same CPU.
MACHINE_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gpu", ("specperf", "gpu")),
    ("torch", ("specperf", "torch")),
    ("cuda", ("specperf", "cuda")),
    ("cudnn", ("specperf", "cudnn")),
    ("transformers", ("specperf", "transformers")),
    ("cpu", ("cpu", "brand_raw")),
    ("machine", ("machine",)),
)
_KEY_MAX = 200  # characters of readable machine kind in a cache key (GitHub allows 512 in all)


def machine_kind(machine_info: Mapping[str, Any]) -> dict[str, Any]:
    """The kind of machine a run's ``machine_info`` records: the :data:`MACHINE_FIELDS` it holds (a field the file
    does not record at all, as in files of older specperf versions or hand-written ones, is left out)."""
    kind: dict[str, Any] = {}
    for name, where in MACHINE_FIELDS:
        value: Any = machine_info
        for key in where:
            if not isinstance(value, Mapping) or key not in value:
                break
            value = value[key]
        else:
            kind[name] = value
    return kind


def machine_differences(kind: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """``"name 'value' (vs 'reference value')"`` for each field both kinds record with different values."""
    return [f"{name} {kind[name]!r} (vs {reference[name]!r})" for name, _ in MACHINE_FIELDS
            if name in kind and name in reference and kind[name] != reference[name]]


def require_same_machine(reference: Mapping[str, Any], runs: Sequence[BenchRun], *, here: str, fix: str) -> None:
    """A ConfigError naming each of ``runs`` whose kind of machine differs from ``reference``, the kind of ``here``,
    field by field; a field that one side does not record is not compared."""
    differing = [(run.path, diff) for run in runs
                 if (diff := machine_differences(machine_kind(run.machine_info), reference))]
    if differing:
        shown = "; ".join(f"{path}: {', '.join(diff)}" for path, diff in differing[:_SHOW_IDS])
        more = f" ({len(differing)} runs in all)" if len(differing) > _SHOW_IDS else ""
        raise ConfigError(f"baseline runs of another kind of machine than {here}: {shown}{more}. Runs are compared "
                          "only within one kind (GPU, CPU, torch, CUDA, cuDNN, transformers): the deterministic gates "
                          "(acceptance, exact match) assume bit-identical results, the timing gate the same "
                          f"hardware; fix: {fix}")


def machine_key(kind: Mapping[str, Any]) -> str:
    """A cache-key fragment for ``kind``: its values, readable, then a hash of the exact kind, so two different kinds
    never share a key or a key prefix. Only ``A-Z a-z 0-9 . _ + -`` (GitHub cache keys allow no comma)."""
    readable = "_".join(f"{name}-" + re.sub(r"[^A-Za-z0-9.+-]+", "-", str(kind[name])).strip("-")
                        for name, _ in MACHINE_FIELDS if name in kind)
    digest = hashlib.sha256(json.dumps(dict(kind), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{readable[:_KEY_MAX]}_{digest}" if readable else digest
