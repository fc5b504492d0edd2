"""vLLM as an engine, on the embedded family on this CPU: engines, counters, the audit, exactness, TP=2, batches,
bad input, vLLM's out-of-memory errors at start, and a clean shutdown. Runs in an environment with vLLM (.ci/run's
second one); skipped elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")

from specperf.bench.suite import SuiteBench  # noqa: E402
from specperf.config import parse_config  # noqa: E402
from specperf.config.cases import build_cases  # noqa: E402
from specperf.engine.vllm_engine import VllmEngineError  # noqa: E402

# End to end: whole `pytest` sessions and vLLM engines in subprocesses.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PERF_TESTS = ROOT / "perf" / "test_speculative.py"
MARK = "SPECPERF_VLLM_TEST_RUN"

SUITE = """
verifier: embedded:verifier
device: cpu
threads: 1
drafts:
  - {name: medium, model: embedded:draft-medium, engine: vllm}
  - {name: lookup, drafter: prompt-lookup, engine: vllm}
  - {name: medium-tp2, model: embedded:draft-medium, engine: vllm, vllm: {tensor_parallel_size: 2}}
  - {name: medium-specperf, model: embedded:draft-medium}
k: [3]
batch_size: [1, 2]
dataset: {source: embedded, slices: ["0:2"]}
generation: {max_new_tokens: 24}
timing: {rounds: 2, warmup_rounds: 1}
thresholds:
  default: {min_exact_match: 1.0}
"""


def processes_with(marker: str) -> list[str]:
    """Processes whose environment holds ``marker``: what a run left behind (its children inherit the variable)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {command[:120]}")
        except OSError:  # gone, or not ours to read
            continue
    return found


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, Any]], list[str], Path]:
    """One pytest run of a vLLM suite in a child process: its cases' extra_info, what it left running, its dir."""
    workdir = tmp_path_factory.mktemp("vllm-run")
    (workdir / "suite.yaml").write_text(SUITE)
    (workdir / "test_perf.py").write_text(PERF_TESTS.read_text())
    marker = f"{MARK}={uuid.uuid4().hex}"
    env = {**os.environ, MARK: marker.split("=", 1)[1], "OMP_NUM_THREADS": "1"}
    env.pop("VLLM_CPU_OMP_THREADS_BIND", None)  # specperf sets the binding itself
    cmd = [sys.executable, "-m", "pytest", "test_perf.py", "--specperf-config=suite.yaml", "--benchmark-json=b.json",
           "--specperf-report=report", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"the vLLM suite failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    # Python's multiprocessing resource tracker outlives its parent by a moment (it reads until its pipe closes).
    deadline = time.monotonic() + 20
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    data = json.loads((workdir / "b.json").read_text())
    cases = {b["extra_info"]["case_id"]: b["extra_info"] for b in data["benchmarks"]}
    return cases, left, workdir


def test_every_engine_is_shut_down_at_session_end(vllm_run: tuple[dict[str, Any], list[str], Path]) -> None:
    assert vllm_run[1] == []


def test_vllm_cases_match_specperfs_verifier_token_for_token(vllm_run: tuple[dict[str, Any], list[str], Path]) -> None:
    cases = vllm_run[0]
    vllm_ids = [i for i, c in cases.items() if c.get("engine") == "vllm"]
    assert sorted(vllm_ids) == sorted(f"{d}-k3-0:2{b}" for d in ("medium", "lookup", "medium-tp2") for b in ("", "-b2"))
    for case_id in vllm_ids:
        assert cases[case_id]["exact_match_rate"] == 1.0, case_id
        assert cases[case_id]["exact_match_gated"] == 1.0, case_id
        assert cases[case_id]["speedup"] > 0 and cases[case_id]["baseline_latency_p50"] > 0


def test_vllm_counters_equal_the_audit(vllm_run: tuple[dict[str, Any], list[str], Path]) -> None:
    """A draft model's greedy acceptance is fixed by the tokens: vLLM's counters equal the transformers replay."""
    for case_id in ("medium-k3-0:2", "medium-k3-0:2-b2", "medium-tp2-k3-0:2"):
        case = vllm_run[0][case_id]
        assert case["acceptance_aggregate"] == case["audit_acceptance_aggregate"], case_id
        counts, k = case["accept_counts"], case["k"]
        assert len(counts) == k + 1
        assert sum(i * c for i, c in enumerate(counts)) / (k * sum(counts)) == case["acceptance_aggregate"]
        assert case["position_acceptance"] is not None and len(case["position_acceptance"]) == k
        assert case["acceptance_p50"] is not None and case["acceptance_p95"] is not None


def test_batches_and_tensor_parallel_give_the_same_counters(vllm_run: tuple[dict[str, Any], list[str], Path]) -> None:
    cases = vllm_run[0]
    keys = ("acceptance_aggregate", "accept_counts", "position_acceptance", "mean_accepted_length", "alpha")
    one = {key: cases["medium-k3-0:2"][key] for key in keys}
    for case_id in ("medium-k3-0:2-b2", "medium-tp2-k3-0:2", "medium-tp2-k3-0:2-b2"):
        assert {key: cases[case_id][key] for key in keys} == one, case_id
    # Same tokens, same draft: specperf's engine sees the same agreement along them.
    assert cases["medium-specperf-k3-0:2"]["alpha"] == one["alpha"]


def test_ngram_lookup_reports_vllms_acceptance_and_the_audits(vllm_run: tuple[dict[str, Any], list[str], Path]) -> None:
    case = vllm_run[0]["lookup-k3-0:2"]
    assert 0.0 <= case["acceptance_aggregate"] <= 1.0
    assert case["audit_acceptance_aggregate"] is not None  # specperf's lookup replayed on vLLM's tokens
    assert case["accept_counts"] is not None


def test_the_report_puts_the_engines_side_by_side(vllm_run: tuple[dict[str, Any], list[str], Path]) -> None:
    report = (vllm_run[2] / "report" / "report.md").read_text()
    assert "## Engines side by side" in report
    row = next(line for line in report.splitlines() if line.startswith("| embedded:draft-medium | 3 | 1 "))
    assert "specperf" not in row  # columns per engine: specperf's and vLLM's figures in one row
    assert row.count("|") >= 8


def bench_for(mapping: dict[str, Any]) -> tuple[SuiteBench, Any]:
    draft = {"name": "bad", "model": "embedded:draft-medium", "engine": "vllm", **mapping}
    config = parse_config({"verifier": "embedded:verifier", "device": "cpu", "threads": 1, "drafts": [draft],
                           "dataset": {"source": "embedded", "slices": ["0:2"]}, "generation": {"max_new_tokens": 8}})
    return SuiteBench(config), build_cases(config)[0][0]


@pytest.mark.parametrize(("mapping", "fragments"), [
    ({"vllm": {"tensor_parallel_size": 8}}, ["bad-k4-0:2", "8 vLLM worker(s) x 1 thread(s) need 8 CPU cores",
                                             "lower tensor_parallel_size"]),
    ({"vllm": {"speculative_config": {"method": "warp-drive"}}}, ["bad-k4-0:2", "no speculative method 'warp-drive'",
                                                                  "draft_model", "ngram"]),
    ({"model": str(ROOT / "no-such-draft")}, ["bad-k4-0:2", "vLLM could not start an engine", "no-such-draft"]),
])
def test_bad_vllm_input_names_the_case(mapping: dict[str, Any], fragments: list[str]) -> None:
    bench, case = bench_for(mapping)
    try:
        with pytest.raises(VllmEngineError) as info:
            bench.runner.pass_fn(case)
        for fragment in fragments:
            assert fragment in str(info.value)
    finally:
        bench.close()


def test_the_out_of_memory_words_are_vllms_own() -> None:
    """specperf tells vLLM's memory errors by their words: each must still be in this vLLM's source."""
    import vllm

    from specperf.bench.memory import VLLM_OOM

    source = "\n".join(p.read_text(errors="replace") for p in Path(vllm.__file__).parent.rglob("*.py"))
    assert [marker for marker in VLLM_OOM if marker not in source] == []


OOM_AT_START = """
import json, sys
from specperf.bench.memory import classify
from specperf.bench.suite import SuiteBench
from specperf.config import parse_config
from specperf.config.cases import build_cases

found = {}
for share in (0.99, 0.0001):
    draft = {"name": "bad", "model": "embedded:draft-medium", "engine": "vllm",
             "vllm": {"gpu_memory_utilization": share}}
    config = parse_config({"verifier": "embedded:verifier", "device": "cpu", "threads": 1, "drafts": [draft],
                           "dataset": {"source": "embedded", "slices": ["0:2"]}, "generation": {"max_new_tokens": 8}})
    bench = SuiteBench(config)
    try:
        bench.runner.pass_fn(build_cases(config)[0][0])
        found[share] = ["started", ""]
    except Exception as exc:
        found[share] = [classify(exc).name, str(exc.__cause__)]
    finally:
        bench.close()
print("RESULT " + json.dumps(found))
"""


def test_vllms_out_of_memory_at_start_is_out_of_memory() -> None:
    """A share larger than the free memory, and one too small for a KV cache: vLLM's ValueErrors, through
    specperf's VllmEngineError, classify as out of memory. In-process (VLLM_ENABLE_V1_MULTIPROCESSING=0): with
    vLLM's default engine process the parent only sees 'Engine core initialization failed'."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
    env.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    proc = subprocess.run([sys.executable, "-c", OOM_AT_START], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    found = json.loads(line[len("RESULT "):])
    assert found["0.99"][0] == "OUT_OF_MEMORY" and "is less than desired CPU memory utilization" in found["0.99"][1]
    assert found["0.0001"][0] == "OUT_OF_MEMORY" and "allocation is less than requested memory for kv" in \
        found["0.0001"][1]
