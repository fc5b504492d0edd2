"""Gate quality of the whole default suite: false alarms on unchanged code and detections of injected regressions,
per case, for the run-level timing gate (now) and the round-level Mann-Whitney gate it replaced (before).

    python tools/gate_quality.py --out outputs/gate-quality         # 1 reference + 10 clean + 2x2 injected runs
    python tools/gate_quality.py --analyze outputs/gate-quality     # the tables again from saved runs, no decoding

Each run is a whole default `pytest perf/` process (fresh interpreter, models loaded again), so run-to-run drift is
in the measurement: a reference run, then `--runs` clean runs of unchanged code with `--injected` runs of each
injected regression spread among them (tests/plugins/inject_faults.py, loaded with -p tests.plugins.inject_faults,
the repository root on PYTHONPATH): the speculative path 15% slower (slow-spec: a real sleep) and every 20th draft
proposal corrupted (corrupt). Every run's JSON is saved under runs/; --analyze recomputes every table from them:

- noise: per case, how much the run medians of per-round speedups scatter, against the rounds inside one run;
- false alarms: each clean run against the reference, every ordered pair of the 11 unchanged runs (one baseline
  file each), and each run against the other 10 as a multi-run baseline;
- power: clean runs scaled as if the speculative path were s slower (per-round speedups / (1 + s)): the smallest s
  caught in every run with no false alarm, against one baseline run and against ten;
- the real injected runs, gated against the reference and against the clean runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specperf.analysis import gates  # noqa: E402
from specperf.analysis.stats import finite_values  # noqa: E402
from specperf.config import Thresholds, TimingGate, load_config  # noqa: E402
from specperf.output.benchfile import load_bench_json  # noqa: E402

log = logging.getLogger("gate_quality")

INJECTIONS = {"slow-spec": "spec_slowdown=0.15", "corrupt": "corrupt_every=20"}
MAX_SLOWDOWN_PCT = 60
Case = dict[str, Any]
Run = dict[str, Case]  # case id -> extra_info of one run's draft cases
Rule = Callable[[Sequence[float], Sequence[Sequence[float]], int], bool]  # (new rounds, baseline runs, n cases)


# =========================================================================== collecting runs


def run_suite(out: Path, inject: str) -> float:
    """One whole default `pytest perf/` process writing --benchmark-json=out; returns its wall seconds."""
    # The repository root on the path: `-p` imports the test-only plugin before any conftest is read.
    root_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "SPECPERF_INJECT": inject, "PYTHONPATH": root_path}
    cmd = [sys.executable, "-m", "pytest", "perf/", "-q", "-p", "no:cacheprovider", "-p", "tests.plugins.inject_faults",
           "-p", "no:randomly", "--benchmark-disable-gc", f"--benchmark-json={out}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if not out.is_file():  # an injected regression may fail floors (exit 1); a run without a JSON is broken
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def schedule(runs: int, injected: int) -> list[tuple[str, int]]:
    """The reference, then the clean runs with the injected ones spread among them (drift hits all alike)."""
    extra = [(name, i) for i in range(injected) for name in INJECTIONS]
    step = max(1, runs // max(1, len(extra)))
    jobs = [("reference", 0)]
    for i in range(runs):
        jobs.append(("clean", i))
        if extra and (i + 1) % step == 0:
            jobs.append(extra.pop(0))
    return jobs + extra


def collect(out: Path, runs: int, injected: int) -> None:
    (out / "runs").mkdir(parents=True, exist_ok=True)
    jobs = schedule(runs, injected)
    for n, (name, i) in enumerate(jobs, 1):
        path = out / "runs" / f"{name}-{i:02d}.json"
        if not path.is_file():
            seconds = run_suite(path, INJECTIONS.get(name, ""))
            log.info("[%d/%d] %s run %d: %.0f s", n, len(jobs), name, i, seconds)


# =========================================================================== the retired round-level test (before)

# The Mann-Whitney U test the round-level gate used; specperf dropped it with that gate, and this study keeps it for
# its "before" column.
ALTERNATIVES = ("less", "greater", "two-sided")
# Largest len(x) * len(y) for which mann_whitney_u enumerates the exact null distribution.
EXACT_MAX_PAIRS = 400


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """1-based ranks (ties get their average rank) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    groups: list[int] = []
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for i in order[start:stop + 1]:
            ranks[i] = (start + stop) / 2 + 1
        groups.append(stop - start + 1)
        start = stop + 1
    return ranks, groups


def _u_counts(m: int, n: int) -> list[int]:
    """``counts[u]``: orderings of m x's and n y's whose U (pairs with x > y) equals u.

    The standard recursion c(u; i, j) = c(u - j; i - 1, j) + c(u; i, j - 1): the largest of
    the i + j values is either an x (beating all j y's) or a y (beating no x).
    """
    prev = [[1] for _ in range(n + 1)]  # i = 0: U is always 0
    for i in range(1, m + 1):
        row = [[1]]  # j = 0: U is always 0
        for j in range(1, n + 1):
            with_x, with_y = prev[j], row[j - 1]
            counts = [0] * (i * j + 1)
            for u, c in enumerate(with_y):
                counts[u] += c
            for u, c in enumerate(with_x):
                counts[u + j] += c
            row.append(counts)
        prev = row
    return prev[n]


def _exact_p(u: float, m: int, n: int, alternative: str) -> float:
    counts = _u_counts(m, n)
    total = math.comb(m + n, m)
    u_int = int(u)  # exact path has no ties, so U is an integer
    cdf = sum(counts[:u_int + 1]) / total
    sf = sum(counts[u_int:]) / total
    if alternative == "less":
        return cdf
    if alternative == "greater":
        return sf
    return min(1.0, 2.0 * min(cdf, sf))


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _asymptotic_p(u: float, m: int, n: int, groups: Sequence[int], alternative: str) -> float:
    """scipy's asymptotic p: normal approximation with tie and continuity corrections."""
    total = m + n
    tie_term = sum(t ** 3 - t for t in groups)
    sigma = math.sqrt(m * n / 12 * ((total + 1) - tie_term / (total * (total - 1))))
    # As scipy: take the upper tail of the statistic that is large under H1.
    u_tail = {"greater": u, "less": m * n - u, "two-sided": max(u, m * n - u)}[alternative]
    numerator = u_tail - m * n / 2 - 0.5
    if sigma == 0:  # every value tied: no evidence either way
        return 1.0
    factor = 2.0 if alternative == "two-sided" else 1.0
    return min(1.0, max(0.0, factor * _normal_sf(numerator / sigma)))


def mann_whitney_u(x: Sequence[float], y: Sequence[float],
                   alternative: str = "less") -> tuple[float, float]:
    """Mann-Whitney U test: ``(U of x, p-value)``, as ``scipy.stats.mannwhitneyu``.

    U counts the pairs (x_i, y_j) with x_i > y_j, ties counting 1/2. ``alternative``: "less"
    (H1: x tends to be smaller than y, p = P(U <= observed)), "greater", or "two-sided"
    (twice the smaller tail, at most 1). With no ties in x + y and ``len(x) * len(y) <= 400``
    the p-value is exact (the null distribution of U counted by the standard recursion);
    otherwise it is the normal approximation with tie and continuity corrections
    (scipy's ``method="asymptotic"``, ``use_continuity=True``). Unlike scipy's "auto", the
    exact path runs up to 400 pairs, not only for samples of at most 8.
    Raises ValueError for an empty sample, non-finite values, or an unknown alternative.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    xs = finite_values(x, "mann_whitney_u x")
    ys = finite_values(y, "mann_whitney_u y")
    m, n = len(xs), len(ys)
    ranks, groups = _ranks(xs + ys)
    u = math.fsum(ranks[:m]) - m * (m + 1) / 2
    if max(groups) == 1 and m * n <= EXACT_MAX_PAIRS:
        return u, _exact_p(u, m, n, alternative)
    return u, _asymptotic_p(u, m, n, groups, alternative)


# =========================================================================== the two timing rules


def median_rounds(case: Case) -> float:
    return statistics.median(case["speedup_rounds"])


def before_rule(alpha: float = 0.05, min_effect: float = 0.05) -> Rule:
    """The gate this study replaced: one baseline run, a one-sided Mann-Whitney test on the rounds, min_effect."""
    def fails(new: Sequence[float], old_runs: Sequence[Sequence[float]], n_cases: int) -> bool:
        old = old_runs[-1]
        if statistics.median(new) >= statistics.median(old) * (1 - min_effect):
            return False
        return mann_whitney_u(new, old, alternative="less")[1] < alpha
    return fails


def after_rule(gate: TimingGate) -> Rule:
    """specperf's run-level gate (specperf.analysis.gates.check_timing) with the suite's settings."""
    def fails(new: Sequence[float], old_runs: Sequence[Sequence[float]], n_cases: int) -> bool:
        return bool(gates.check_timing("c", new, old_runs, gate, n_cases))
    return fails


def scaled(rounds: Sequence[float], slowdown: float) -> list[float]:
    """Per-round speedups as if the speculative path were ``slowdown`` slower."""
    return [s / (1 + slowdown) for s in rounds]


# =========================================================================== loading and tables


def load_runs(out: Path) -> dict[str, list[Run]]:
    """Scenario -> its runs (draft cases only), in file order."""
    found: dict[str, list[Run]] = {}
    for path in sorted((out / "runs").glob("*.json")):
        scenario = path.stem.rsplit("-", 1)[0]
        cases = {cid: info for cid, info in load_bench_json(path).cases.items() if info.get("draft")}
        found.setdefault(scenario, []).append(cases)
    return found


def noise_table(unchanged: list[Run], case_ids: list[str]) -> list[str]:
    lines = ["| case | run medians (min-max) | range | between-run SD of log medians | "
             "within-run IQR / median (median over runs) |", "| --- | ---: | ---: | ---: | ---: |"]
    for cid in case_ids:
        medians = [median_rounds(run[cid]) for run in unchanged]
        logs = [math.log(m) for m in medians]
        iqr = [_iqr(run[cid]["speedup_rounds"]) / median_rounds(run[cid]) for run in unchanged]
        lines.append(f"| {cid} | {min(medians):.3f}-{max(medians):.3f} | {max(medians) / min(medians) - 1:.1%} | "
                     f"{statistics.stdev(logs):.1%} | {statistics.median(iqr):.1%} |")
    return lines


def _iqr(values: Sequence[float]) -> float:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def false_alarms(rule: Rule, unchanged: list[Run], cid: str, n_cases: int) -> tuple[int, int, int]:
    """(clean runs failing against the reference, failing ordered pairs, runs failing against all the others)."""
    ref, clean = unchanged[0], unchanged[1:]
    rounds = [run[cid]["speedup_rounds"] for run in unchanged]
    vs_ref = sum(rule(run[cid]["speedup_rounds"], [ref[cid]["speedup_rounds"]], n_cases) for run in clean)
    pairs = sum(rule(rounds[i], [rounds[j]], n_cases) for i in range(len(rounds)) for j in range(len(rounds))
                if i != j)
    loo = sum(rule(rounds[i], rounds[:i] + rounds[i + 1:], n_cases) for i in range(len(rounds)))
    return vs_ref, pairs, loo


def caught(rule: Rule, unchanged: list[Run], cid: str, n_cases: int, multi: bool, slowdown: float) -> tuple[int, int]:
    """(unchanged runs that fail when scaled ``slowdown`` slower, runs tested): each against the reference
    (multi=False) or against all the other runs (multi=True)."""
    rounds = [run[cid]["speedup_rounds"] for run in unchanged]
    tested = range(len(rounds)) if multi else range(1, len(rounds))
    hits = sum(rule(scaled(rounds[i], slowdown), rounds[:i] + rounds[i + 1:] if multi else [rounds[0]], n_cases)
               for i in tested)
    return hits, len(tested)


def smallest_caught(rule: Rule, unchanged: list[Run], cid: str, n_cases: int, multi: bool) -> int | None:
    """Smallest slowdown (whole percent) that every unchanged run, scaled, fails. None if beyond MAX_SLOWDOWN_PCT."""
    for pct in range(1, MAX_SLOWDOWN_PCT + 1):
        hits, tested = caught(rule, unchanged, cid, n_cases, multi, pct / 100)
        if hits == tested:
            return pct
    return None


def false_alarm_table(rules: dict[str, Rule], unchanged: list[Run], case_ids: list[str]) -> list[str]:
    runs = len(unchanged)
    lines = ["| case | " + " | ".join(f"{name}: vs reference ({runs - 1}) / ordered pairs ({runs * (runs - 1)}) / "
                                       f"vs the other {runs - 1} runs ({runs})" for name in rules) + " |",
             "| --- |" + " ---: |" * len(rules)]
    totals = {name: [0, 0, 0] for name in rules}
    for cid in case_ids:
        cells = []
        for name, rule in rules.items():
            fa = false_alarms(rule, unchanged, cid, len(case_ids))
            totals[name] = [t + f for t, f in zip(totals[name], fa)]
            cells.append(f"{fa[0]} / {fa[1]} / {fa[2]}")
        lines.append(f"| {cid} | " + " | ".join(cells) + " |")
    lines.append("| **all cases** | " + " | ".join(f"**{t[0]} / {t[1]} / {t[2]}**" for t in totals.values()) + " |")
    return lines


def power_table(rules: dict[str, Rule], unchanged: list[Run], case_ids: list[str]) -> list[str]:
    runs, n = len(unchanged), len(case_ids)
    cols = [f"{name}: {label}" for name in rules for label in (
        "15% slower caught, one baseline run", f"15% slower caught, {runs - 1} baseline runs",
        "smallest caught in every run, one / many")]
    lines = ["| case | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for cid in case_ids:
        cells = []
        for rule in rules.values():
            one, many = (smallest_caught(rule, unchanged, cid, n, multi) for multi in (False, True))
            cells += ["{}/{}".format(*caught(rule, unchanged, cid, n, multi, 0.15)) for multi in (False, True)]
            cells.append(f"{_pct(one)} / {_pct(many)}")
        lines.append(f"| {cid} | " + " | ".join(cells) + " |")
    return lines


def _pct(value: int | None) -> str:
    return f">{MAX_SLOWDOWN_PCT}%" if value is None else f"{value}%"


def suite_false_alarms(rule: Rule, unchanged: list[Run], case_ids: list[str]) -> tuple[int, int]:
    """(clean runs with any case failing against the reference, ordered pairs with any case failing)."""
    n = len(case_ids)
    runs = [[run[cid]["speedup_rounds"] for cid in case_ids] for run in unchanged]

    def any_fail(i: int, j: int) -> bool:
        return any(rule(runs[i][c], [runs[j][c]], n) for c in range(n))

    vs_ref = sum(any_fail(i, 0) for i in range(1, len(runs)))
    pairs = sum(any_fail(i, j) for i in range(len(runs)) for j in range(len(runs)) if i != j)
    return vs_ref, pairs


def injected_table(injected: dict[str, list[Run]], unchanged: list[Run], case_ids: list[str],
                   thresholds: Thresholds) -> list[str]:
    """Every gate (floors, tolerances, timing) on the real injected runs: against the reference, and against all
    unchanged runs as a multi-run baseline."""
    lines = ["| scenario | case | caught against the reference | "
             f"caught against the {len(unchanged)} unchanged runs |",
             "| --- | --- | ---: | ---: |"]
    for scenario, runs in injected.items():
        for cid in case_ids:
            one = _caught(runs, cid, [unchanged[0][cid]], thresholds, len(case_ids))
            many = _caught(runs, cid, [run[cid] for run in unchanged], thresholds, len(case_ids))
            lines.append(f"| {scenario} | {cid} | {one}/{len(runs)} | {many}/{len(runs)} |")
    return lines


def _caught(runs: list[Run], cid: str, old: list[Case], thresholds: Thresholds, n_cases: int) -> int:
    return sum(bool(gates.evaluate(cid, run[cid]["draft"], run[cid], old, thresholds, n_cases=n_cases))
               for run in runs)


def analyze(out: Path) -> str:
    runs = load_runs(out)
    unchanged = runs["reference"] + runs["clean"]
    case_ids = sorted(unchanged[0])
    thresholds = load_config(ROOT / "perf" / "specperf.yaml").thresholds
    rules = {"before": before_rule(), "after": after_rule(thresholds.timing)}
    gate = thresholds.timing
    suite_lines = [f"| {name} | {fa[0]}/{len(unchanged) - 1} | {fa[1]}/{len(unchanged) * (len(unchanged) - 1)} |"
                   for name, fa in ((n, suite_false_alarms(r, unchanged, case_ids)) for n, r in rules.items())]
    text = [
        f"# Gate quality: the default suite, {len(case_ids)} draft cases, {len(unchanged)} unchanged runs",
        "",
        f"After: run-level gate, alpha {gate.alpha} per run (Bonferroni over the cases), min_effect "
        f"{gate.min_effect:.0%}, prior run_sd {gate.run_sd:.1%} with fewer than {gate.min_runs} baseline runs. "
        "Before: one baseline run, one-sided Mann-Whitney on the rounds, alpha 0.05, min_effect 5%.",
        "", "## Noise per case", "", *noise_table(unchanged, case_ids),
        "", "## Whole runs with a false alarm (any case)", "",
        "| gate | clean runs failing against the reference | ordered pairs failing |", "| --- | ---: | ---: |",
        *suite_lines,
        "", "## False alarms per case (timing gate)", "", *false_alarm_table(rules, unchanged, case_ids),
        "", "## Power per case: unchanged runs scaled as if the speculative path were slower", "",
        *power_table(rules, unchanged, case_ids),
    ]
    injected = {name: runs[name] for name in INJECTIONS if name in runs}
    if injected:
        text += ["", "## Real injected runs (every gate, after)", "",
                 *injected_table(injected, unchanged, case_ids, thresholds)]
    return "\n".join(text) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "gate-quality")
    ap.add_argument("--runs", type=int, default=10, help="clean runs after the reference (default 10)")
    ap.add_argument("--injected", type=int, default=2, help="runs of each injected regression (default 2)")
    ap.add_argument("--analyze", type=Path, default=None, help="only analyze the runs saved in this directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = args.analyze or args.out
    if args.analyze is None:
        collect(out, args.runs, args.injected)
    report = analyze(out)
    (out / "gate-quality.md").write_text(report, encoding="utf-8")
    sys.stdout.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
