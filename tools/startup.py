"""Measure what specperf costs at startup: in every pytest run (the plugin is autoloaded) and per CLI command.

The pytest11 entry point loads the plugin into *every* pytest run of an environment that has specperf installed,
so its import and configure time is paid by projects that never use it. This script times, interleaved so that a
slow phase of the machine hits every command alike, the median of N runs of:

- ``pytest -q -p no:cacheprovider`` on a temporary project with one trivial test, with the plugin autoloaded,
  and the same with ``-p no:specperf`` (the difference is the plugin's overhead);
- ``specperf --help``, ``specperf compare OLD NEW`` and ``specperf report BENCH --out DIR`` on a small
  hand-made ``--benchmark-json`` file (see :func:`bench_document`, which tests/test_torch_free_import.py reuses).

Usage: ``python tools/startup.py [--runs 5] [--json results.json]``. The numbers only mean something on a quiet
machine: the load average before and after is printed with them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("specperf.tools.startup")

TRIVIAL_TEST = "def test_trivial():\n    assert 1 + 1 == 2\n"
BASELINE_ID = "baseline-0:2"
DRAFT_ID = "small-k2-0:2"
PLUGIN_ROWS = ("pytest (plugin autoloaded)", "pytest -p no:specperf")


# =========================================================================== the hand-made benchmark file


def _common_info() -> dict[str, Any]:
    """What every case of a real run records about where it ran."""
    return {"verifier": "embedded:verifier", "slice": "0:2", "device": "cpu", "dtype": "float32", "batch_size": 1,
            "n_requests": 2}


def baseline_info() -> dict[str, Any]:
    """extra_info of the verifier-only baseline case: no draft, so no speedup or acceptance."""
    return {**_common_info(), "case_id": BASELINE_ID, "draft": None, "k": 0, "latency_p50": 0.0100,
            "latency_p95": 0.0120, "throughput_p50": 100.0, "throughput_p95": 83.3, "ttft_p50": 0.020}


def draft_info() -> dict[str, Any]:
    """extra_info of one draft case, with every key the compare table, the gates and the report tables read."""
    return {**_common_info(), "case_id": DRAFT_ID, "draft": "small", "draft_model": "embedded:draft-small",
            "drafter": "model", "k": 2, "speedup": 1.50, "speedup_rounds": [1.45, 1.50, 1.55],
            "acceptance_aggregate": 0.80, "acceptance_mean": 0.80, "acceptance_p50": 0.80, "acceptance_p95": 0.95,
            "alpha": 0.85, "mean_accepted_length": 2.40, "verifier_calls_per_token": 0.42, "flop_speedup": 1.30,
            "exact_match_rate": 1.0, "exact_match_gated": 1.0, "expected_speedup": 1.80, "efficiency": 0.83,
            "latency_p50": 0.0067, "latency_p95": 0.0080, "throughput_p50": 150.0, "throughput_p95": 125.0,
            "ttft_p50": 0.021}


def _benchmark_entry(info: dict[str, Any]) -> dict[str, Any]:
    name = f"test_speculative[{info['case_id']}]"
    return {"group": None, "name": name, "fullname": f"perf/test_speculative.py::{name}", "params": None,
            "param": info["case_id"], "extra_info": info, "options": {}, "stats": {}}


def bench_document() -> dict[str, Any]:
    """A minimal pytest-benchmark ``--benchmark-json`` document holding one baseline and one draft case.

    Its ``version`` is the installed pytest-benchmark's, so specperf's major-version check accepts it.
    """
    try:
        version = metadata.version("pytest-benchmark")
    except metadata.PackageNotFoundError:  # the reader then skips the version check
        version = None
    return {"machine_info": {"python_version": sys.version.split()[0]}, "commit_info": {},
            "benchmarks": [_benchmark_entry(baseline_info()), _benchmark_entry(draft_info())],
            "datetime": "2024-01-01T00:00:00+00:00", "version": version}


def write_bench_json(path: Path) -> Path:
    """Write :func:`bench_document` to ``path``; return it."""
    path.write_text(json.dumps(bench_document(), indent=2) + "\n", encoding="utf-8")
    return path


# =========================================================================== the commands


@dataclass
class Timing:
    """One command's wall-clock seconds per run, and the exit codes it returned."""

    label: str
    argv: list[str]
    cwd: str
    expected_exit: int = 0  # the report's start-only row exits 2 on purpose (a missing input file)
    seconds: list[float] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.seconds)


def _workspace(root: Path) -> dict[str, Path]:
    """The trivial pytest project and the benchmark files; one place, so every run reads the same files."""
    project = root / "project"
    project.mkdir()
    (project / "test_trivial.py").write_text(TRIVIAL_TEST, encoding="utf-8")
    bench = write_bench_json(root / "bench.json")
    new = write_bench_json(root / "bench-new.json")  # same content: compare must pass (exit 0)
    return {"project": project, "bench": bench, "new": new, "out": root / "report"}


def build_commands(root: Path) -> list[Timing]:
    """The commands to time, in the order each round runs them."""
    paths = _workspace(root)
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py"]
    cli = str(Path(sys.executable).parent / "specperf")  # the console script of this environment
    project, here = str(paths["project"]), str(root)
    return [
        Timing(PLUGIN_ROWS[0], pytest_cmd, project),
        Timing(PLUGIN_ROWS[1], [*pytest_cmd, "-p", "no:specperf"], project),
        Timing("specperf --help", [cli, "--help"], here),
        Timing("specperf compare OLD NEW", [cli, "compare", str(paths["bench"]), str(paths["new"])], here),
        # Its start alone: a missing input file stops it (exit 2) right after start-up, before any plotting.
        Timing("specperf report MISSING (start only)", [cli, "report", str(root / "missing.json"), "--out",
                                                         str(paths["out"])], here, expected_exit=2),
        Timing("specperf report BENCH --out DIR", [cli, "report", str(paths["bench"]), "--out", str(paths["out"])],
               here),
    ]


def _environment() -> dict[str, str]:
    """No plugin autoload switch or extra options from the caller's shell; no network for the hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS",
                                                            "PYTEST_PLUGINS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def time_once(timing: Timing, env: dict[str, str]) -> tuple[float, int]:
    """Seconds and exit code of one run; output is discarded (only its cost is of interest)."""
    start = time.perf_counter()
    proc = subprocess.run(timing.argv, cwd=timing.cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        log.warning("%s exited %d: %s", timing.label, proc.returncode, (proc.stderr or proc.stdout).strip()[-400:])
    return elapsed, proc.returncode


def measure(timings: list[Timing], runs: int) -> None:
    """One untimed warm-up round (bytecode caches, file cache), then ``runs`` interleaved rounds."""
    env = _environment()
    for timing in timings:
        time_once(timing, env)
    for round_no in range(1, runs + 1):
        log.info("round %d/%d", round_no, runs)
        for timing in timings:
            seconds, code = time_once(timing, env)
            timing.seconds.append(seconds)
            timing.exit_codes.append(code)


# =========================================================================== the report


def cpu_model() -> str:
    """The CPU's 'model name' from /proc/cpuinfo (Linux), or 'unknown'."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def plugin_overhead(timings: list[Timing]) -> float:
    """Median pytest time with the plugin minus the median with ``-p no:specperf``."""
    by_label = {t.label: t for t in timings}
    return by_label[PLUGIN_ROWS[0]].median() - by_label[PLUGIN_ROWS[1]].median()


def markdown(timings: list[Timing], context: dict[str, Any]) -> str:
    """The results as a markdown table, then the overhead and the conditions of the measurement."""
    lines = ["| command | median (s) | min (s) | max (s) | runs | exit codes |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for t in timings:
        codes = ",".join(sorted({str(c) for c in t.exit_codes}))
        lines.append(f"| `{t.label}` | {t.median():.3f} | {min(t.seconds):.3f} | {max(t.seconds):.3f} | "
                     f"{len(t.seconds)} | {codes} |")
    overhead = (f"pytest overhead of the plugin (median with plugin - median with -p no:specperf): "
                f"{context['plugin_overhead_s']:+.3f} s")
    conditions = (f"CPU: {context['cpu']} ({context['cpus']} logical CPUs); load average (1, 5, 15 min) before: "
                  f"{context['load_before']}, after: {context['load_after']}; Python {context['python']}")
    lines += ["", overhead, "", conditions]
    if any(code != t.expected_exit for t in timings for code in t.exit_codes):
        lines += ["", "WARNING: some commands exited with an unexpected code: their timings are not comparable."]
    return "\n".join(lines)


def run(runs: int) -> tuple[list[Timing], dict[str, Any]]:
    """Measure every command ``runs`` times in a temporary directory; return the timings and the conditions."""
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="specperf-startup-") as tmp:
        timings = build_commands(Path(tmp))
        measure(timings, runs)
    context = {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_average(),
               "python": sys.version.split()[0], "plugin_overhead_s": plugin_overhead(timings)}
    return timings, context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default: 5)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    logging.basicConfig(level=logging.INFO, format="startup: %(message)s")
    timings, context = run(args.runs)
    print(markdown(timings, context))
    if args.json is not None:
        args.json.write_text(json.dumps({"context": context, "commands": [asdict(t) for t in timings]}, indent=2)
                             + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
