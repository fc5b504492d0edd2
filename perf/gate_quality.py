"""Gate quality: do specperf's gates stay quiet on unchanged code and catch injected regressions?

    python perf/gate_quality.py --out outputs/gate-quality            # 1 reference + 4 scenarios x 10 runs
    python perf/gate_quality.py --runs 3 --rounds 6 --out /tmp/gq     # a quick look
    python perf/gate_quality.py --analyze outputs/gate-quality        # tables again from saved runs, no decoding

Each run is a whole `pytest perf/` process (fresh interpreter, models loaded again), so run-to-run drift is in the
measurement. First a reference run of unchanged code (the baseline JSON); then, interleaved so machine drift hits
every scenario alike, `--runs` runs of each scenario:

- clean: unchanged code; every gate failure is a false alarm;
- corrupt: every 20th draft proposal corrupted (acceptance about 4-5 points lower): the deterministic gates;
- slow-spec: the speculative path 15% slower (sleep proportional to each request's time): the timing gate;
- fast-baseline: the verifier-only baseline 15% faster (simulated at its clock): the timing gate.

The injections are inject_faults (environment variable SPECPERF_INJECT). Every run is gated against the reference
with specperf.analysis.gates.evaluate, the function `--specperf-baseline` uses, under the suite's thresholds. Then
the clean
runs answer two more questions without more decoding, by scaling their per-round speedups by 1/(1+s): the smallest
slowdown s the timing gate catches in every run, and how that depends on min_effect and on the number of rounds
(the first R rounds of each run). Writes runs/*.json and gate-quality.md under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specperf.analysis import gates  # noqa: E402
from specperf.config import DEFAULT_CONFIG_PATH, Thresholds, TimingGate, load_config  # noqa: E402
from specperf.output.benchfile import load_bench_json  # noqa: E402

log = logging.getLogger("gate_quality")

SCENARIOS = {  # name -> SPECPERF_INJECT value
    "clean": "",
    "corrupt": "corrupt_every=20",
    "slow-spec": "spec_slowdown=0.15",
    "fast-baseline": "baseline_speedup=0.15",
}
SLOWDOWNS = (0.05, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25, 0.30)
MIN_EFFECTS = (0.03, 0.05, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25)


@dataclass(frozen=True)
class Setup:
    draft: str
    k: int
    slice: str
    rounds: int
    max_new_tokens: int
    threads: int | None = None  # torch CPU threads (None: the suite's)


def write_suite(setup: Setup, path: Path) -> None:
    """The default suite narrowed to one draft case, with this study's rounds and lengths."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    data["drafts"] = [d for d in data["drafts"] if d["name"] == setup.draft]
    if not data["drafts"]:
        raise SystemExit(f"no draft named {setup.draft!r} in {DEFAULT_CONFIG_PATH}")
    data.update(k=[setup.k])
    data["dataset"]["slices"] = [setup.slice]
    data["generation"]["max_new_tokens"] = setup.max_new_tokens
    data["timing"]["rounds"] = setup.rounds
    if setup.threads is not None:
        data["threads"] = setup.threads
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def run_suite(suite: Path, out: Path, inject: str) -> float:
    """One whole `pytest perf/` process writing --benchmark-json=out; returns its wall seconds."""
    perf_path = os.pathsep.join(filter(None, [str(ROOT / "perf"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "SPECPERF_INJECT": inject, "PYTHONPATH": perf_path}
    cmd = [sys.executable, "-m", "pytest", "perf/test_speculative.py::test_speculative", "-q", "-p", "no:cacheprovider",
           "-p", "inject_faults",
           "--benchmark-disable-gc", f"--specperf-config={suite}",
           f"--benchmark-json={out}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def collect(setup: Setup, runs: int, out: Path, scenarios: list[str]) -> None:
    """The reference run, then `runs` rounds of every scenario, interleaved."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    suite = out / "suite.yaml"
    write_suite(setup, suite)
    (out / "setup.json").write_text(json.dumps(setup.__dict__, indent=2), encoding="utf-8")
    jobs = [("reference", 0)] + [(name, i) for i in range(runs) for name in scenarios]
    for n, (name, i) in enumerate(jobs, 1):
        path = out / "runs" / f"{name}-{i:02d}.json"
        if path.is_file():
            continue
        seconds = run_suite(suite, path, SCENARIOS.get(name, ""))
        log.info("[%d/%d] %s run %d: %.0f s", n, len(jobs), name, i, seconds)


def only_case(path: Path) -> dict[str, Any]:
    cases = {k: v for k, v in load_bench_json(path).cases.items() if v.get("draft")}
    if len(cases) != 1:
        raise SystemExit(f"{path}: expected one draft case, found {sorted(cases)}")
    return next(iter(cases.values()))


def failures(new: dict[str, Any], old: dict[str, Any], thresholds: Thresholds) -> tuple[bool, bool]:
    """(a deterministic gate failed, the timing gate failed) for one run against the reference."""
    found = gates.evaluate(new["case_id"], new["draft"], new, old, thresholds)
    timing = any(v.metric == "speedup" and v.old is not None for v in found)
    return any(v.metric != "speedup" or v.old is None for v in found), timing


def scaled(case: dict[str, Any], slowdown: float, rounds: int | None = None) -> dict[str, Any]:
    """A clean run's case as if the speculative path were `slowdown` slower (and cut to its first `rounds`)."""
    kept = case["speedup_rounds"][:rounds]
    return {**case, "speedup_rounds": [s / (1 + slowdown) for s in kept]}


def timing_fails(cases: list[dict[str, Any]], old: dict[str, Any], gate: TimingGate) -> int:
    return sum(bool(gates.check_timing(c["case_id"], c["speedup_rounds"], old["speedup_rounds"], gate))
               for c in cases)


def scenario_table(runs: dict[str, list[dict[str, Any]]], ref: dict[str, Any], thresholds: Thresholds) -> list[str]:
    lines = ["| scenario | runs | deterministic gates failed | timing gate failed | any gate failed | "
             "acceptance | median speedup / reference |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, cases in runs.items():
        flags = [failures(c, ref, thresholds) for c in cases]
        ratios = [statistics.median(c["speedup_rounds"]) / statistics.median(ref["speedup_rounds"]) for c in cases]
        acceptance = statistics.median(c["acceptance_aggregate"] for c in cases)
        lines.append(f"| {name} | {len(cases)} | {sum(d for d, _ in flags)} | {sum(t for _, t in flags)} | "
                     f"{sum(d or t for d, t in flags)} | {acceptance:.3f} | "
                     f"{min(ratios):.3f}-{max(ratios):.3f} (median {statistics.median(ratios):.3f}) |")
    return lines


def sweep_table(clean: list[dict[str, Any]], ref: dict[str, Any], alpha: float, rounds: int | None) -> list[str]:
    """Rows: min_effect; columns: false alarms, then detections at each simulated slowdown."""
    cut_ref = scaled(ref, 0.0, rounds)
    head = "| min_effect | false alarms | " + " | ".join(f"{s:.0%} slower" for s in SLOWDOWNS) + " |"
    lines = [head, "| ---: " * (len(SLOWDOWNS) + 2) + "|"]
    for effect in MIN_EFFECTS:
        gate = TimingGate(alpha=alpha, min_effect=effect)
        fp = timing_fails([scaled(c, 0.0, rounds) for c in clean], cut_ref, gate)
        caught = [timing_fails([scaled(c, s, rounds) for c in clean], cut_ref, gate) for s in SLOWDOWNS]
        lines.append(f"| {effect:.0%} | {fp}/{len(clean)} | " + " | ".join(f"{n}/{len(clean)}" for n in caught) + " |")
    return lines


def smallest_caught(clean: list[dict[str, Any]], ref: dict[str, Any], gate: TimingGate,
                    rounds: int | None) -> float | None:
    """The smallest slowdown (1% steps) that every clean run, scaled, fails, if it has no false alarm."""
    cut_ref = scaled(ref, 0.0, rounds)
    runs = [scaled(c, 0.0, rounds) for c in clean]
    if timing_fails(runs, cut_ref, gate):
        return None
    for pct in range(1, 61):
        if timing_fails([scaled(c, pct / 100, rounds) for c in clean], cut_ref, gate) == len(clean):
            return pct / 100
    return None


def rounds_table(clean: list[dict[str, Any]], ref: dict[str, Any], gate: TimingGate, setup: Setup) -> list[str]:
    lines = ["| rounds | run-to-run spread of median speedup | smallest slowdown caught 10/10, 0 false alarms |",
             "| ---: | ---: | ---: |"]
    for r in sorted({3, 5, 8, setup.rounds}):
        if r > setup.rounds:
            continue
        medians = [statistics.median(c["speedup_rounds"][:r]) for c in clean]
        spread = (max(medians) - min(medians)) / statistics.median(medians)
        found = smallest_caught(clean, ref, gate, r)
        lines.append(f"| {r} | {spread:.1%} | {'not reached' if found is None else f'{found:.0%}'} |")
    return lines


def rotation_table(runs: dict[str, list[dict[str, Any]]], ref: dict[str, Any], gate: TimingGate) -> list[str]:
    """Every clean run (and the reference) in turn as the baseline: how the gate fares whatever run it is given."""
    pool = [ref, *runs.get("clean", [])]
    lines = ["| scenario | comparisons | timing gate failed |", "| --- | ---: | ---: |"]
    for name, cases in runs.items():
        pairs = [(new, old) for old in pool for new in cases if new is not old]
        fails = sum(bool(gates.check_timing(n["case_id"], n["speedup_rounds"], o["speedup_rounds"], gate))
                    for n, o in pairs)
        lines.append(f"| {name} | {len(pairs)} | {fails} |")
    return lines


def analyze(out: Path, min_effect: float | None = None, alpha: float | None = None) -> str:
    setup = Setup(**json.loads((out / "setup.json").read_text(encoding="utf-8")))
    thresholds = load_config(out / "suite.yaml").thresholds
    timing = thresholds.timing  # what the gate would do with another min_effect or alpha
    timing = replace(timing, min_effect=timing.min_effect if min_effect is None else min_effect,
                     alpha=timing.alpha if alpha is None else alpha)
    thresholds = replace(thresholds, timing=timing)
    ref = only_case(out / "runs" / "reference-00.json")
    runs = {name: [only_case(p) for p in sorted((out / "runs").glob(f"{name}-*.json"))] for name in SCENARIOS}
    runs = {name: cases for name, cases in runs.items() if cases}
    clean, gate = runs.get("clean", []), thresholds.timing
    threads = "the suite's threads" if setup.threads is None else f"{setup.threads} thread(s)"
    text = [
        f"# Gate quality: {setup.draft} k={setup.k}, slice {setup.slice}, {setup.max_new_tokens} new tokens, "
        f"{setup.rounds} paired rounds per run, {threads}",
        "",
        f"Timing gate: one-sided Mann-Whitney alpha {gate.alpha}, min_effect {gate.min_effect:.0%}. "
        f"Reference median speedup {statistics.median(ref['speedup_rounds']):.3f}x.",
        "",
        "## Each scenario, gated against the reference run",
        "",
        *scenario_table(runs, ref, thresholds),
    ]
    if clean:
        text += ["", f"## Timing gate vs simulated slowdown (clean runs scaled; alpha {gate.alpha}, all rounds)", "",
                 *sweep_table(clean, ref, gate.alpha, None),
                 "", "## Rounds against the smallest slowdown caught (default gate)", "",
                 *rounds_table(clean, ref, gate, setup),
                 "", f"## Any run as the baseline: the reference and each clean run in turn (min_effect "
                 f"{gate.min_effect:.0%})", "",
                 *rotation_table(runs, ref, gate)]
    return "\n".join(text) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "gate-quality")
    ap.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    ap.add_argument("--draft", default="draft-medium")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--slice", default="0:2")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per run (default: the suite's)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the suite's)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated subset of {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--min-effect", type=float, default=None,
                    help="analyze with this timing-gate min_effect instead of the suite's")
    ap.add_argument("--alpha", type=float, default=None,
                    help="analyze with this timing-gate alpha instead of the suite's")
    ap.add_argument("--analyze", type=Path, default=None, help="only analyze the runs saved in this directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = args.analyze or args.out
    if args.analyze is None:
        rounds = args.rounds or load_config(DEFAULT_CONFIG_PATH).timing.rounds
        scenarios = [name for name in args.scenarios.split(",") if name]
        unknown = sorted(set(scenarios) - set(SCENARIOS))
        if unknown:
            ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        collect(Setup(args.draft, args.k, args.slice, rounds, args.max_new_tokens, args.threads), args.runs, out,
                scenarios)
    report = analyze(out, args.min_effect, args.alpha)
    (out / "gate-quality.md").write_text(report, encoding="utf-8")
    sys.stdout.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
