"""Smoke tests of the prepared GPU check, tools/gpu_check.py, so that it cannot rot on a project without a GPU.

No GPU here: the script runs in its CPU mode on its cheapest checks (about 25 s, in one child process), and the
CUDA-only verdicts are checked on recorded outcomes. The whole script, on CUDA, is run by hand (README).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tools.gpu_check import CHECKS, SCHEMA, Context, oom_verdict, variant_dtype
from tools.sync_count import SYNC_WARNING, count_syncs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.py"
RESULT_KEYS = {"name", "status", "seconds", "dtype", "details"}


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    """The CPU mode on sync-count, oom and vllm (with an interpreter that does not exist, so it is skipped fast)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "results.json"
    proc = _run("--device", "cpu", "--only", "vllm,sync-count,oom", "--out", str(out),
                "--vllm-python", str(tmp / "no-such-python"), "--work-dir", str(tmp / "work"))
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_the_cpu_mode_writes_one_json_of_results(cpu_run):
    proc, report = cpu_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["schema"] == SCHEMA and report["device"] == "cpu" and report["ok"] is True
    assert {"torch", "torch_cuda", "transformers", "gpu", "git_commit"} <= set(report["environment"])
    assert [c["name"] for c in report["checks"]] == ["sync-count", "oom", "vllm"]  # CHECKS' order, not --only's
    assert all(set(c) == RESULT_KEYS and c["seconds"] >= 0 for c in report["checks"])
    assert report["summary"] == {"pass": sum(c["status"] == "pass" for c in report["checks"]), "fail": 0,
                                 "skipped": sum(c["status"] == "skipped" for c in report["checks"]), "error": 0}


@pytest.mark.slow
def test_cuda_only_parts_are_skipped_never_passed(cpu_run):
    checks = {c["name"]: c for c in cpu_run[1]["checks"]}
    sync = checks["sync-count"]
    assert sync["status"] == "skipped" and "needs CUDA" in sync["details"]["reason"]
    assert [r["batch"] for r in sync["details"]["runs"]] == [1, 8]
    assert all(r["steps"] > 0 and r["syncs"] is None for r in sync["details"]["runs"])  # decoded, not counted
    oom = checks["oom"]
    # A CPU allocation failure is no torch.OutOfMemoryError: skipped, unless specperf reports it as out of memory.
    assert oom["status"] in ("skipped", "pass"), oom["details"]
    assert [c["outcome"] for c in oom["details"]["cases"]] == ["passed", "failed", "passed"]
    assert checks["vllm"]["status"] == "skipped" and "no-such-python" in checks["vllm"]["details"]["reason"]


@pytest.mark.slow
def test_bad_options_are_usage_errors(tmp_path):
    proc = _run("--only", "lean-bitwise,nope")
    assert proc.returncode == 2 and "nope" in proc.stderr and all(name in proc.stderr for name in CHECKS)
    if not torch.cuda.is_available():
        proc = _run("--out", str(tmp_path / "r.json"), "--only", "sync-count")
        assert proc.returncode == 2 and "--device cpu" in proc.stderr and not (tmp_path / "r.json").exists()


def _case(name: str, outcome: str, message: str | None = None) -> dict[str, object]:
    return {"name": f"test_speculative[{name}]", "outcome": outcome, "message": message}


def test_the_oom_verdict_on_cuda(tmp_path):
    cuda, cpu = Context("cuda", tmp_path, 0.0, "python"), Context("cpu", tmp_path, 0.0, "python")
    base = {"name": "test_baseline[baseline-0:1]", "outcome": "passed", "message": None}
    oom = _case("lookup-k2-0:1", "failed", "specperf.bench.memory.CaseOutOfMemory: lookup-k2-0:1: out of memory")
    other = _case("lookup-k2-0:1", "failed", "RuntimeError: DefaultCPUAllocator: can't allocate memory")
    k3 = _case("lookup-k3-0:1", "passed")
    assert oom_verdict(cuda, [base, oom, k3])[0] == "pass"
    assert oom_verdict(cuda, [base, other, k3])[0] == "fail"
    assert oom_verdict(cpu, [base, other, k3])[0] == "skipped"
    assert oom_verdict(cuda, [base, oom, _case("lookup-k3-0:1", "failed", "x")]) == (
        "fail", "the session did not go on: test_speculative[lookup-k3-0:1] failed")
    assert oom_verdict(cuda, [base, _case("lookup-k2-0:1", "passed"), k3])[0] == "fail"


def test_sync_counting_records_every_occurrence(monkeypatch):
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def run():
        for _ in range(3):  # one call site, three syncs: each must count
            warnings.warn(SYNC_WARNING, UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
        return ["results"]

    results, sites = count_syncs(run, counting=True)
    assert results == ["results"] and len(sites) == 3 and len(set(sites)) == 1
    assert modes == ["warn", "default"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert count_syncs(run, counting=False)[1] == []


def test_lean_test_ids_name_their_dtype():
    assert [variant_dtype(f"test_logits_are_bitwise_transformers[{v}]") for v in
            ("fp32", "bf16", "fp16-batch2", "layer-index-scaling")] == ["float32", "bfloat16", "float16", "float32"]
    assert variant_dtype("test_forward_is_a_suite_key") == "float32"
