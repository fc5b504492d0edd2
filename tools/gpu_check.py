"""The prepared GPU check: what only a CUDA device can show about specperf, in under 10 minutes, as one JSON file.

Usage (from the repository root, in the environment specperf is installed in)::

    python tools/gpu_check.py                                  # --device cuda, writes results.json
    python tools/gpu_check.py --out gpu.json --budget-s 540    # stop starting checks after 540 s
    python tools/gpu_check.py --only lean-bitwise,sync-count   # a subset
    python tools/gpu_check.py --vllm-python /path/to/venv/bin/python   # vLLM in another environment
    python tools/gpu_check.py --device cpu                     # the same checks on a CPU (what can run there)

The checks, in order (each runs its work in child processes, stopped at a time limit, so one that fails or hangs
never stops the others):

- ``lean-bitwise``: tests/test_lean_gpt2.py and the batched bitwise tests of tests/test_batch_forward.py with
  SPECPERF_TEST_DEVICE set to the device: the lean GPT-2 forward's logits bitwise equal to transformers' in
  float32, float16 and bfloat16, at batch 1 and with the batch's masks, and the same decoding. Passes when every
  test passes and the float16 and bfloat16 ones ran.
- ``seed-suite``: the seed suite (specperf/suites/gpt2-pubmedqa.yaml) offline with tests/test_seed_suite.py's
  random stand-in models and rows, in float16 on the device, rows 0:4, 32 new tokens; gpt2-large's stand-in is a
  copy of the verifier's, so one case accepts nearly every draft token. Its speed floor is removed (stand-ins this
  small are no faster than their verifier); every other gate applies. Passes on pytest's exit code 0
  with every case present; reports exact match, near-ties and the audit per case.
- ``sync-count``: tools/sync_count.py: host syncs per speculative step at batch 1 and 8 (a measurement: it passes
  unless it errors). Needs CUDA; on a CPU the decodes run and the check is skipped.
- ``oom``: a three-case suite in which tools/gpu_check_oom.py makes the k = 2 case allocate twice the device's
  memory. Passes when that case fails with specperf's CaseOutOfMemory and the next case passes.
- ``vllm``: one speculative case of specperf/suites/embedded-vllm.yaml (draft-medium-vllm, k = 2, batch 1, rows 0:2,
  32 new tokens; float16 on CUDA, float32 on a CPU) when ``import vllm`` works, else skipped.

The JSON: ``environment`` (Python, torch and its CUDA build, transformers, GPU name and memory, git commit), the
options, and ``checks``: one ``{name, status, seconds, dtype, details}`` each, status one of pass, fail, skipped,
error (the check itself broke; its traceback is in details). It is rewritten after each check, so a run cut short
still leaves the checks it finished. The exit code is 0 only when no check failed or errored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "specperf-gpu-check/1"
DEFAULT_BUDGET_S = 540.0  # 9 minutes of checks, a minute of slack under the 10 the check is sized for
MIN_START_S = 20.0  # a check is not started with less time than this left
TAIL_CHARS = 3000  # output kept in details when a child process fails
KILL_GRACE_S = 10.0  # between SIGTERM and SIGKILL of a child's process group
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]

SEED_SUITE = ROOT / "specperf" / "suites" / "gpt2-pubmedqa.yaml"
SEED_SLICE, SEED_TOKENS = "0:4", 32  # tests/test_seed_suite.py fills 4 rows
# Random stand-ins accept no draft token, which leaves exactness and the audit nothing to check: this draft's
# stand-in is the verifier's twin, so its case accepts nearly every token (and parts only where float16 rounding does).
TWIN_DRAFT = "gpt2-large"
NO_SPEED_FLOOR = "default:\n  min_speedup: null  # random stand-in models are no faster than their verifier\n"
VLLM_SUITE = ROOT / "specperf" / "suites" / "embedded-vllm.yaml"
VLLM_DRAFT, VLLM_K = "draft-medium-vllm", 2
OOM_SUITE = """\
verifier: embedded:verifier
drafts:
  - name: lookup
    drafter: prompt-lookup
k: [2, 3]  # tools/gpu_check_oom.py makes k = 2 run out of memory; k = 3 must still pass
dataset: {source: embedded, slices: ["0:1"]}
generation: {max_new_tokens: 8}
timing: {rounds: 1, warmup_rounds: 0, breakdown: false, cost_rounds: 2}
"""


class CheckResult(TypedDict):
    name: str
    status: str  # pass | fail | skipped | error
    seconds: float
    dtype: str | None  # the dtype(s) the check ran in, comma-separated
    details: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds its name and time."""

    status: str  # pass | fail | skipped | error
    details: dict[str, Any]
    dtype: str | None = None


@dataclass(frozen=True)
class Context:
    """What every check needs: the device, a folder for its files, the deadline, the vLLM interpreter."""

    device: str
    work: Path
    deadline: float  # time.monotonic() after which no child may run
    vllm_python: str

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


# =========================================================================== child processes


@dataclass(frozen=True)
class Finished:
    """A child process's end: its exit code (None when it was killed at its time limit) and its output."""

    returncode: int | None
    output: str
    seconds: float
    limit_s: float

    def tail(self) -> str:
        return self.output[-TAIL_CHARS:]

    def describe(self) -> str:
        if self.returncode is None:
            return f"killed at its time limit of {self.limit_s:.0f} s"
        return f"exit code {self.returncode}"


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group (the child and what it started: pytest, vLLM engines), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            proc.poll()  # reap the child itself: a zombie still counts as a member of its group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def run_child(ctx: Context, label: str, cmd: list[str], *, cap_s: float,
              env: dict[str, str] | None = None) -> Finished:
    """Run ``cmd`` from the repository root in a new session, its output in ``work/label.log``, for at most
    ``cap_s`` seconds or what is left of the budget. Whatever it leaves running is stopped when it ends, when it
    times out and on Ctrl-C."""
    limit = max(1.0, min(cap_s, ctx.remaining()))
    log = ctx.work / f"{label}.log"
    child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "400",
                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _stop_group(proc)
            proc.wait()
    return Finished(returncode, log.read_text(errors="replace"), time.monotonic() - start, limit)


def junit_cases(path: Path) -> list[dict[str, Any]]:
    """``[{name, outcome, message}]`` of a --junitxml file, in run order; outcome passed, failed, error or skipped."""
    if not path.is_file():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome, message = name, node.get("message") or node.text  # the exception, else the report
                break
        cases.append({"name": case.get("name", ""), "outcome": outcome, "message": message})
    return cases


def benchmark_cases(path: Path) -> dict[str, dict[str, Any]]:
    """case id -> extra_info of a --benchmark-json file (empty when the run wrote none)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {b["extra_info"]["case_id"]: b["extra_info"] for b in data["benchmarks"] if "case_id" in b["extra_info"]}


# =========================================================================== the checks


BATCH_BITWISE = ("tests/test_batch_forward.py::test_the_lean_forward_at_batch_is_bitwise_transformers",
                 "tests/test_batch_forward.py::test_the_lean_forward_is_bitwise_transformers_on_equal_prompts")
DTYPE_TAGS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def variant_dtype(test_name: str) -> str:
    """The dtype of a tests/test_lean_gpt2.py test from its id (``[bf16]``, ``[fp16-batch2]``); float32 else."""
    match = re.search(r"\[([a-z0-9]+)", test_name)
    return DTYPE_TAGS.get(match.group(1), "float32") if match else "float32"


def check_lean_bitwise(ctx: Context) -> Outcome:
    xml = ctx.work / "lean-bitwise.xml"
    command = [sys.executable, *PYTEST, "tests/test_lean_gpt2.py", *BATCH_BITWISE, f"--junitxml={xml}"]
    child = run_child(ctx, "lean-bitwise", command, cap_s=240, env={"SPECPERF_TEST_DEVICE": ctx.device})
    tests = [{**t, "dtype": variant_dtype(t["name"])} for t in junit_cases(xml)]
    ran = {t["dtype"] for t in tests if t["outcome"] == "passed"}
    problems = [f"{t['name']}: {t['outcome']}" for t in tests if t["outcome"] != "passed"]
    if not {"float16", "bfloat16"} <= ran:
        problems.append(f"no passing float16 and bfloat16 tests (passed in: {', '.join(sorted(ran)) or 'none'})")
    if child.returncode != 0:
        problems.append(f"pytest: {child.describe()}")
    details: dict[str, Any] = {"device": ctx.device, "tests": tests, "problems": problems}
    if problems:
        details["tail"] = child.tail()
    return Outcome("fail" if problems else "pass", details, ",".join(sorted({t["dtype"] for t in tests})) or None)


def _snapshot(hub: Path, model_id: str) -> Path:
    """The one snapshot folder tests/test_seed_suite.py wrote for ``model_id``."""
    org, name = model_id.split("/")
    (snapshot,) = (hub / f"models--{org}--{name}" / "snapshots").iterdir()
    return snapshot


def _seed_home(ctx: Context) -> tuple[Path, list[str]]:
    """An HF_HOME holding the seed suite's stand-in models and rows (tests/test_seed_suite.py builds them), with
    TWIN_DRAFT's stand-in replaced by a copy of the verifier's; the expected case ids."""
    from specperf.config import load_config
    from tests.test_seed_suite import fill_dataset, fill_models

    suite = load_config(SEED_SUITE)
    assert suite.dataset.path is not None  # the seed suite reads a hub data set
    hf_home = ctx.work / "hf_home"
    fill_models(hf_home / "hub", [suite.verifier, *(d.model for d in suite.drafts if d.model)])
    fill_dataset(hf_home, suite.dataset.path, suite.dataset.hf_config)
    (twin,) = (d.model for d in suite.drafts if d.name == TWIN_DRAFT)
    assert twin is not None  # a model draft
    for source in _snapshot(hf_home / "hub", suite.verifier).iterdir():
        shutil.copyfile(source, _snapshot(hf_home / "hub", twin) / source.name)
    ids = [f"baseline-{SEED_SLICE}", *(f"{d.name}-k{k}-{SEED_SLICE}" for d in suite.drafts for k in suite.k)]
    return hf_home, ids


def exactness(info: dict[str, Any]) -> dict[str, Any]:
    """A draft case's exact match, near-ties and audit, from its extra_info."""
    tolerance = info.get("near_tie_tolerance")
    margins, divergence = info.get("divergence_margins") or [], info.get("first_divergence") or []
    engine, audit = info.get("acceptance_aggregate"), info.get("audit_acceptance_aggregate")
    return {
        "exact_match_rate": info.get("exact_match_rate"), "exact_or_near_tie_rate": info.get("exact_or_near_tie_rate"),
        "exact_match_gated": info.get("exact_match_gated"), "near_tie_tolerance": tolerance,
        "divergent_requests": sum(d is not None for d in divergence),
        "near_ties": sum(m is not None and tolerance is not None and m <= tolerance for m in margins),
        "acceptance_aggregate": engine, "audit_acceptance_aggregate": audit,
        "audit_matches_engine": None if engine is None or audit is None else abs(engine - audit) < 1e-12,
        "audit_near_ties": info.get("audit_near_ties"), "speedup": info.get("speedup"),
    }


def check_seed_suite(ctx: Context) -> Outcome:
    with (ctx.work / "seed-suite-setup.log").open("w") as log, contextlib.redirect_stderr(log):  # progress bars
        hf_home, expected = _seed_home(ctx)
    thresholds, out = ctx.work / "seed-thresholds.yaml", ctx.work / "seed-suite.json"
    thresholds.write_text(NO_SPEED_FLOOR)
    cmd = [sys.executable, *PYTEST, "perf/", f"--specperf-config={SEED_SUITE}", f"--specperf-slice={SEED_SLICE}",
           f"--specperf-max-new-tokens={SEED_TOKENS}", f"--specperf-device={ctx.device}", "--specperf-dtype=float16",
           f"--specperf-thresholds={thresholds}", f"--benchmark-json={out}"]
    child = run_child(ctx, "seed-suite", cmd, cap_s=300, env={"HF_HOME": str(hf_home)})
    cases = benchmark_cases(out)
    missing = [case_id for case_id in expected if case_id not in cases]
    details: dict[str, Any] = {
        "device": ctx.device, "slice": SEED_SLICE, "max_new_tokens": SEED_TOKENS, "pytest": child.describe(),
        "missing_cases": missing, "failed": [line for line in child.output.splitlines() if line.startswith("FAILED ")],
        "cases": {case_id: exactness(info) for case_id, info in cases.items() if info.get("draft") is not None},
    }
    ok = child.returncode == 0 and not missing
    if not ok:
        details["tail"] = child.tail()
    return Outcome("pass" if ok else "fail", details, "float16")


def check_sync_count(ctx: Context) -> Outcome:
    out = ctx.work / "sync-count.json"
    child = run_child(ctx, "sync-count", [sys.executable, "tools/sync_count.py", f"--device={ctx.device}",
                                          f"--out={out}"], cap_s=240)
    if child.returncode != 0 or not out.is_file():
        return Outcome("error", {"error": f"tools/sync_count.py: {child.describe()}", "tail": child.tail()})
    report = json.loads(out.read_text())
    if not report["counted"]:
        reason = "skipped: needs CUDA (torch.cuda.set_sync_debug_mode); the decodes ran, nothing was counted"
        return Outcome("skipped", {"reason": reason, **report}, report["dtype"])
    return Outcome("pass", report, report["dtype"])


def oom_verdict(ctx: Context, cases: list[dict[str, Any]]) -> tuple[str, str]:
    """(status, why) of the OOM run: the k = 2 case must fail as CaseOutOfMemory and the others pass."""
    oom = [c for c in cases if "-k2-" in c["name"]]
    rest = [c for c in cases if "-k2-" not in c["name"]]
    if len(oom) != 1 or len(rest) != 2:
        return "fail", f"expected 3 cases (baseline, k2, k3), got {[c['name'] for c in cases]}"
    if any(c["outcome"] != "passed" for c in rest):
        return "fail", "the session did not go on: " + "; ".join(f"{c['name']} {c['outcome']}" for c in rest
                                                                 if c["outcome"] != "passed")
    if oom[0]["outcome"] == "passed":
        return "fail", "the forced allocation did not fail: the k2 case passed"
    message = oom[0]["message"] or ""
    if "CaseOutOfMemory" in message:
        return "pass", "the k2 case failed with CaseOutOfMemory and the next case passed"
    first = message.splitlines()[0] if message else "no message"
    if ctx.cuda:
        return "fail", f"the k2 case failed, but not with CaseOutOfMemory: {first}"
    return "skipped", ("skipped: needs CUDA for a real out-of-memory error. On a CPU the forced 1 PiB allocation "
                       f"failed with: {first}; it is not a torch.OutOfMemoryError, so specperf failed the case with "
                       "that error instead of CaseOutOfMemory. The next case passed: the session went on")


def check_oom(ctx: Context) -> Outcome:
    suite, xml = ctx.work / "oom-suite.yaml", ctx.work / "oom.xml"
    suite.write_text(OOM_SUITE)
    dtype = "float16" if ctx.cuda else "float32"
    cmd = [sys.executable, *PYTEST, "-p", "tools.gpu_check_oom", "perf/", f"--specperf-config={suite}",
           f"--specperf-device={ctx.device}", f"--specperf-dtype={dtype}", f"--junitxml={xml}"]
    child = run_child(ctx, "oom", cmd, cap_s=240)
    cases = junit_cases(xml)
    status, why = oom_verdict(ctx, cases)
    details: dict[str, Any] = {"device": ctx.device, "reason": why, "pytest": child.describe(), "cases": cases}
    if status == "fail":
        details["tail"] = child.tail()
    return Outcome(status, details, dtype)


def check_vllm(ctx: Context) -> Outcome:
    try:
        probe = run_child(ctx, "vllm-import", [ctx.vllm_python, "-c",
                                               "import vllm; print('VLLM_VERSION=' + vllm.__version__)"], cap_s=180)
    except OSError as exc:  # no such interpreter
        return Outcome("skipped", {"reason": f"skipped: cannot run {ctx.vllm_python}: {exc}"})
    found = re.search(r"VLLM_VERSION=(\S+)", probe.output)
    if probe.returncode != 0 or found is None:
        last = (probe.output.strip().splitlines() or ["no output"])[-1]
        return Outcome("skipped", {"reason": f"skipped: `import vllm` fails with {ctx.vllm_python}: {last}"})
    dtype, out = ("float16" if ctx.cuda else "float32"), ctx.work / "vllm.json"
    cmd = [ctx.vllm_python, *PYTEST, "perf/", f"--specperf-config={VLLM_SUITE}", f"--specperf-drafts={VLLM_DRAFT}",
           f"--specperf-k={VLLM_K}", "--specperf-batch=1", "--specperf-slice=0:2", "--specperf-max-new-tokens=32",
           f"--specperf-device={ctx.device}", f"--specperf-dtype={dtype}", f"--benchmark-json={out}"]
    child = run_child(ctx, "vllm", cmd, cap_s=420)
    cases = benchmark_cases(out)
    case_id = f"{VLLM_DRAFT}-k{VLLM_K}-0:2"
    details: dict[str, Any] = {"vllm": found.group(1), "python": ctx.vllm_python, "device": ctx.device,
                               "case": case_id, "pytest": child.describe(),
                               "failed": [line for line in child.output.splitlines() if line.startswith("FAILED ")]}
    if case_id in cases:
        details.update(exactness(cases[case_id]))
    ok = child.returncode == 0 and case_id in cases
    if not ok:
        details["tail"] = child.tail()
    return Outcome("pass" if ok else "fail", details, dtype)


def check_near_tie_drift(ctx: Context) -> Outcome:
    """The rounding drift that the audit's near-tie tolerance must cover, measured on this device in float16 and
    bfloat16 (tools/near_tie_drift.py): pass when every draft's largest drift stays within NEAR_TIE_STEPS and every
    audit passed."""
    from specperf.precision import NEAR_TIE_STEPS

    rows: list[dict[str, Any]] = []
    for dtype in ("float16", "bfloat16"):
        out = ctx.work / f"near-tie-drift-{dtype}.json"
        child = run_child(ctx, f"near-tie-drift-{dtype}", [sys.executable, "tools/near_tie_drift.py",
                                                           f"--device={ctx.device}", f"--dtype={dtype}",
                                                           "--prompts=8", f"--json={out}"], cap_s=180)
        if child.returncode != 0 or not out.is_file():
            return Outcome("fail", {"error": f"tools/near_tie_drift.py: {child.describe()}", "tail": child.tail()},
                           dtype)
        rows.extend(json.loads(out.read_text()))
    worst = max(row["max_drift_steps"] for row in rows)
    details = {"tolerance_steps": NEAR_TIE_STEPS, "max_drift_steps": worst, "drafts": rows}
    return Outcome("pass" if worst <= NEAR_TIE_STEPS else "fail", details, "float16,bfloat16")


CHECKS: dict[str, Callable[[Context], Outcome]] = {
    "lean-bitwise": check_lean_bitwise,
    "near-tie-drift": check_near_tie_drift,
    "seed-suite": check_seed_suite,
    "sync-count": check_sync_count,
    "oom": check_oom,
    "vllm": check_vllm,
}


# =========================================================================== running and recording


def run_check(name: str, ctx: Context) -> CheckResult:
    """One check, never raising: a check that breaks is an ``error`` with its traceback."""
    start = time.monotonic()
    if ctx.remaining() < MIN_START_S:
        outcome = Outcome("skipped", {"reason": f"skipped: the budget is spent ({max(ctx.remaining(), 0):.0f} s "
                                                "left of --budget-s)"})
    else:
        try:
            outcome = CHECKS[name](ctx)
        except Exception as exc:
            outcome = Outcome("error", {"error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()[-TAIL_CHARS:]})
    return CheckResult(name=name, status=outcome.status, seconds=round(time.monotonic() - start, 2),
                       dtype=outcome.dtype, details=outcome.details)


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware the results belong to."""
    import torch
    import transformers

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    props = torch.cuda.get_device_properties(torch.device(device)) if cuda else None
    status = _git("status", "--porcelain")
    return {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,  # type: ignore[no-untyped-call]
        "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
        "gpu": props.name if props else None,
        "gpu_memory_gib": round(props.total_memory / 1024**3, 1) if props else None,
        "gpu_capability": f"{props.major}.{props.minor}" if props else None,
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None,
    }


def summary(results: list[CheckResult]) -> dict[str, int]:
    return {status: sum(r["status"] == status for r in results) for status in ("pass", "fail", "skipped", "error")}


def write(out: Path, report: dict[str, Any], results: list[CheckResult], started: float) -> None:
    counts = summary(results)
    report.update(checks=results, summary=counts, ok=not (counts["fail"] or counts["error"]),
                  wall_s=round(time.monotonic() - started, 1))
    out.write_text(json.dumps(report, indent=2) + "\n")


def parse_device(value: str) -> str:
    if not DEVICE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {value!r}")
    return value


def parse_only(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in CHECKS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown check(s) {', '.join(unknown) or value!r}; the checks are "
                                         f"{', '.join(CHECKS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", type=parse_device, default="cuda", metavar="DEVICE", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, default=Path("results.json"), metavar="PATH", help="the results JSON")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, metavar="S",
                        help="seconds for all checks: children are stopped at it, later checks skipped")
    parser.add_argument("--only", type=parse_only, default=tuple(CHECKS), metavar="NAMES",
                        help=f"comma-separated checks to run, of {', '.join(CHECKS)}")
    parser.add_argument("--vllm-python", default=sys.executable, metavar="PATH",
                        help="the Python that runs the vllm check (an environment with vLLM and specperf)")
    parser.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                        help="keep the checks' logs, JSON and XML files here (default: a temporary folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    sys.path.insert(0, str(ROOT))  # tests.test_seed_suite builds the seed suite's stand-ins
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but CUDA is not available here (torch {torch.__version__}); "
              "run with --device cpu for the CPU mode", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "schema": SCHEMA, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": args.device,
        "budget_s": args.budget_s, "only": list(args.only), "environment": environment(args.device)}
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="specperf-gpu-check-") as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(args.device, work.resolve(), started + args.budget_s, args.vllm_python)
        for name in [n for n in CHECKS if n in args.only]:  # in CHECKS' order, whatever --only's
            results.append(run_check(name, ctx))
            write(args.out, report, results, started)
            print(f"gpu_check: {name}: {results[-1]['status']} ({results[-1]['seconds']:.1f} s)", flush=True)
    write(args.out, report, results, started)
    print(f"gpu_check: {summary(results)} in {report['wall_s']:.0f} s; results in {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
