"""Read a pytest-benchmark ``--benchmark-json`` file written by specperf: one reader for the plugin's baseline,
``specperf compare`` and ``specperf report``. Free of torch and pytest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specperf.errors import ConfigError


@dataclass(frozen=True)
class BenchRun:
    """The specperf part of a pytest-benchmark ``--benchmark-json`` file."""

    path: Path
    cases: dict[str, dict[str, Any]]  # case id -> extra_info
    machine_info: dict[str, Any] = field(default_factory=dict)
    commit_info: dict[str, Any] = field(default_factory=dict)
    datetime: str | None = None


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


def load_bench_json(path: str | Path, *, role: str = "benchmark file") -> BenchRun:
    """Read a ``--benchmark-json`` file: its specperf cases (keyed by ``extra_info.case_id``), machine and commit.

    Entries without a ``case_id`` (other benchmarks in the same run) are skipped. A missing or malformed file, or
    one without specperf cases, is a ConfigError that says what to pass instead; ``role`` names the file in it.
    """
    file = Path(path)
    data = _read_json(file, role)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ConfigError(f"{role} {file} has no 'benchmarks' list: it is not a pytest-benchmark JSON "
                          "file; fix: pass the file written by `pytest perf/ --benchmark-json=FILE`")
    cases: dict[str, dict[str, Any]] = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        if isinstance(info, dict) and isinstance(info.get("case_id"), str):
            cases[info["case_id"]] = info
    if not cases:
        raise ConfigError(f"{role} {file} holds no specperf cases (no extra_info.case_id); fix: write it "
                          "with `pytest perf/ --benchmark-json=FILE` with specperf installed")
    machine, commit = data.get("machine_info"), data.get("commit_info")
    return BenchRun(file, cases, machine if isinstance(machine, dict) else {},
                    commit if isinstance(commit, dict) else {}, data.get("datetime"))
