"""The tests' small suite and helpers for benchmark JSON files; the session fixtures that run it live in conftest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PERF_TESTS = ROOT / "perf" / "test_speculative.py"

# The tests' small suite, shared with tests/test_plugin.py: two prompts, two block sizes, a model draft, prompt lookup
# and an HF-engine case. The shared run below narrows it to the specperf-engine drafts (RUN_DRAFTS), at
# batch sizes 1 and 2 (RUN_BATCH).
SUITE = """
verifier: embedded:verifier
device: cpu
threads: 1
drafts:
  - name: small
    model: embedded:draft-small
  - name: lookup
    drafter: prompt-lookup
  - name: small-hf
    model: embedded:draft-small
    engine: hf
k: [2, 3]
dataset:
  source: embedded
  slices: ["0:2"]
generation:
  max_new_tokens: 12
timing:
  rounds: 2
  warmup_rounds: 1
  breakdown: false  # the shared run (run_suite) turns it on; other runs save the extra pass
  cost_rounds: 3  # the step costs' figures are not what these runs test
thresholds:
  default:
    min_exact_match: 1.0
  timing:
    # Runs of this tiny suite last a fraction of a second and drift far more between runs than real ones; the
    # tests that gate one run against another check the deterministic gates, and the timing gate only on purpose.
    min_effect: 0.9
"""
RUN_DRAFTS = "small,lookup"
RUN_BATCH = "1,2"  # two batch sizes, so the report's batch plots have data
CASE_IDS = ("baseline-0:2", "small-k2-0:2", "small-k3-0:2", "lookup-k2-0:2", "lookup-k3-0:2",
            "baseline-0:2-b2", "small-k2-0:2-b2", "small-k3-0:2-b2", "lookup-k2-0:2-b2", "lookup-k3-0:2-b2")

def run_suite(workdir: Path) -> Path:
    """Run the tiny suite in a fresh pytest process in ``workdir``; return its ``--benchmark-json`` file."""
    (workdir / "suite.yaml").write_text(SUITE.replace("breakdown: false", "breakdown: true"))
    (workdir / "test_perf.py").write_text(PERF_TESTS.read_text())
    # One thread: tiny models run fastest that way, and the machine is shared with other measurements.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "test_perf.py", "--specperf-config=suite.yaml",
           "--benchmark-json=bench.json", f"--specperf-drafts={RUN_DRAFTS}",
           f"--specperf-batch={RUN_BATCH}", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the benchmark run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    return workdir / "bench.json"


def load_cases(path: Path) -> dict[str, dict[str, Any]]:
    """case id -> extra_info of a ``--benchmark-json`` file."""
    data = json.loads(path.read_text())
    return {b["extra_info"]["case_id"]: b["extra_info"] for b in data["benchmarks"] if "case_id" in b["extra_info"]}


def edit_case(src: Path, dst: Path, case_id: str, key: str, delta: float) -> Path:
    """Copy a ``--benchmark-json`` file with ``extra_info[key]`` of one case changed by ``delta``."""
    data = json.loads(src.read_text())
    for bench in data["benchmarks"]:
        if bench["extra_info"].get("case_id") == case_id:
            bench["extra_info"][key] += delta
    dst.write_text(json.dumps(data))
    return dst
