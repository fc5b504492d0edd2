"""Gate study of the in-session A/B on the whole default suite: false alarms of unchanged code against itself, the
power to catch a slowdown, per case, and what a session costs.

    python tools/ab_study.py --out outputs/ab-study --aa 10 --slowed 2 --corrupt 1 --default-runs 1
    python tools/ab_study.py --analyze outputs/ab-study      # every table again from the saved sessions

Each session is a whole `pytest perf/ --specperf-ab=THIS_CHECKOUT` process: both sides are this checkout (A/A), so
any DIFFERENT is a false alarm. Sessions are saved under sessions/NAME/ (pairs.json, ab.md, A.json, B.json, the
workers' logs, session.json with the wall time and the command); --analyze rebuilds every table from them:

- sessions: kind, wall time, grain, decisions, the median per-pair noise;
- A/A: per case, how many sessions called it DIFFERENT, SAME or UNKNOWN, and the pairs used;
- power (scaled): each A/A session replayed with side B's speculative rounds scaled slower by s (its speedups divided
  by 1 + s), through the same looks and intervals as the session ran: per case, in how many sessions a slowdown of
  3%, 5% and 10% is a DIFFERENT slowdown, and the smallest s (1..30%) caught in every session. With pairing this is
  what a pure slowdown of B looks like. A session that stopped early (both metrics SAME) has no pairs past its
  stop; a scaled replay that would have needed them counts as not caught;
- slowed sessions: side B really slower (tests/plugins/inject_faults.py, spec_slowdown, B's worker only);
- corrupt sessions: side B's draft proposals corrupted (corrupt_every), caught by the exact work comparison;
- default runs: the wall time of a plain `pytest perf/` for the time budget (an A/B session <= 1.5x of it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specperf.analysis.ab import DIFFERENT, AbPlan, PairedRounds, next_step  # noqa: E402

log = logging.getLogger("ab_study")

SCALED = (0.03, 0.05, 0.10)
SEARCH_PCT = range(1, 31)
Session = dict[str, Any]


# =========================================================================== running sessions


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def session_command(out: Path, ab: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "perf/", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-p", "tests.plugins.inject_faults", f"--benchmark-json={out / 'B.json'}"]
    return [*cmd, f"--specperf-ab={ROOT}", f"--specperf-ab-out={out}"] if ab else cmd


def run_session(out: Path, kind: str, inject: str, extra: Sequence[str]) -> dict[str, Any]:
    """One whole session (``default``: a plain run, else an A/A session with ``inject`` on side B) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    # The repository root on the path: `-p` imports the test-only plugin before any conftest is read.
    root_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": root_path, "SPECPERF_INJECT": inject, "SPECPERF_INJECT_SIDE": "B"}
    cmd = [*session_command(out, ab=kind != "default"), *extra]
    started = time.perf_counter()
    with (out / "pytest.log").open("w") as stream:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT, check=False).returncode
    record = {"kind": kind, "inject": inject, "wall_s": time.perf_counter() - started, "rc": rc, "command": cmd,
              "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "session.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s: %s in %.0f s (exit %d)", out.name, kind, record["wall_s"], rc)
    return record


def schedule(aa: int, slowed: int, corrupt: int, default_runs: int) -> list[tuple[str, str]]:
    """(kind, injection) of every session, the special ones spread among the A/A sessions."""
    special = [("slowed", "spec_slowdown=0.05")] * slowed + [("corrupt", "corrupt_every=20")] * corrupt
    special += [("default", "")] * default_runs
    plan: list[tuple[str, str]] = [("aa", "")] * aa
    step = max(1, len(plan) // (len(special) + 1))
    for i, item in enumerate(special):
        plan.insert(min(len(plan), (i + 1) * step + i), item)
    return plan


def collect(out: Path, plan: list[tuple[str, str]], extra: Sequence[str]) -> None:
    sessions = out / "sessions"
    for i, (kind, inject) in enumerate(plan):
        folder = sessions / f"{i:02d}-{kind}"
        if (folder / "session.json").is_file():
            continue  # resume: a session already saved is kept
        run_session(folder, kind, inject, extra)


# =========================================================================== reading and replaying sessions


def load_sessions(out: Path) -> list[Session]:
    sessions = []
    for meta in sorted((out / "sessions").glob("*/session.json")):
        session: Session = {"name": meta.parent.name, **json.loads(meta.read_text())}
        pairs = meta.parent / "pairs.json"
        session["pairs"] = json.loads(pairs.read_text()) if pairs.is_file() else None
        bench = meta.parent / "B.json"
        session["bench"] = json.loads(bench.read_text()) if bench.is_file() else None
        sessions.append(session)
    return sessions


def plan_of(pairs: dict[str, Any]) -> AbPlan:
    return AbPlan(**pairs["plan"])


def paired(case: dict[str, Any], n: int, slowdown: float = 0.0) -> PairedRounds:
    """A case's first ``n`` pairs, side B's speculative rounds scaled by 1 + slowdown."""
    a_spec, b_spec = case["A"]["spec_s"][:n], [w * (1 + slowdown) for w in case["B"]["spec_s"][:n]]
    a_base, b_base = case["A"]["baseline_s"][:n], case["B"]["baseline_s"][:n]
    return PairedRounds(case["case_id"], tuple(a_spec), tuple(b_spec),
                        tuple(b / s for b, s in zip(a_base, a_spec)), tuple(b / s for b, s in zip(b_base, b_spec)))


def replay(case: dict[str, Any], plan: AbPlan, slowdown: float = 0.0) -> tuple[str, bool]:
    """The case's outcome through the session's looks: 'failed' (a DIFFERENT slowdown), 'settled' or 'unknown',
    and whether the replay ran out of saved pairs before it settled."""
    have = len(case["A"]["spec_s"])
    for size in plan.look_sizes:
        if size > have:
            return "unknown", True
        step = next_step(paired(case, size, slowdown), plan)
        if step.failed:
            return "failed", False
        if step.done:
            return "settled", False
    return "unknown", False


def pair_noise(case: dict[str, Any]) -> float:
    """SD of the pairs' log ratios of speculative walls."""
    d = [math.log(b / a) for a, b in zip(case["A"]["spec_s"], case["B"]["spec_s"])]
    return statistics.stdev(d) if len(d) > 1 else float("nan")


# =========================================================================== tables


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(row) + " |" for row in cells)]


def _of(sessions: list[Session], kind: str) -> list[Session]:
    return [s for s in sessions if s["kind"] == kind and s.get("pairs")]


def _cases(sessions: list[Session]) -> list[str]:
    return sorted({c["case_id"] for s in sessions if s.get("pairs") for c in s["pairs"]["cases"]})


def _case(session: Session, case_id: str) -> dict[str, Any] | None:
    return next((c for c in session["pairs"]["cases"] if c["case_id"] == case_id), None)


def sessions_table(sessions: list[Session]) -> list[str]:
    rows = []
    for s in sessions:
        pairs = s.get("pairs") or {}
        cases = pairs.get("cases", [])
        counts = {d: sum(d in c["decisions"].values() for c in cases) for d in ("DIFFERENT", "SAME", "UNKNOWN")}
        noise = statistics.median(pair_noise(c) for c in cases) if cases else float("nan")
        rows.append([s["name"], s["kind"], s["inject"] or "-", f"{s['wall_s']:.0f}", s["rc"],
                     pairs.get("grain", "-"), counts["DIFFERENT"], counts["SAME"], counts["UNKNOWN"],
                     f"{100 * noise:.1f}%" if cases else "-", s.get("cpu", "?"), s.get("date", "?")])
    header = ["session", "kind", "injected on B", "wall (s)", "exit", "grain", "cases with a DIFFERENT",
              "with a SAME", "with an UNKNOWN", "median pair SD", "CPU", "date"]
    return _table(header, rows)


def aa_table(aa: list[Session], case_ids: list[str]) -> list[str]:
    rows = []
    for cid in case_ids:
        found = [c for s in aa if (c := _case(s, cid)) is not None]
        decisions = [d for c in found for d in c["decisions"].values()]
        pairs = [len(c["A"]["spec_s"]) for c in found]
        noise = [pair_noise(c) for c in found]
        rows.append([cid, len(found), decisions.count("DIFFERENT"), decisions.count("SAME"),
                     decisions.count("UNKNOWN"), statistics.median(pairs) if pairs else "-",
                     f"{100 * statistics.median(noise):.1f}%" if noise else "-"])
    return _table(["case", "sessions", "DIFFERENT (wall + speedup)", "SAME", "UNKNOWN", "median pairs",
                   "median pair SD"], rows)


def power_table(aa: list[Session], case_ids: list[str]) -> list[str]:
    rows = []
    for cid in case_ids:
        found = [(c, plan_of(s["pairs"])) for s in aa if (c := _case(s, cid)) is not None]
        row: list[object] = [cid]
        for slowdown in SCALED:
            outcomes = [replay(c, plan, slowdown) for c, plan in found]
            caught = sum(o == "failed" for o, _ in outcomes)
            short = sum(t for _, t in outcomes)
            row.append(f"{caught}/{len(found)}" + (f" ({short} short)" if short else ""))
        smallest = next((p for p in SEARCH_PCT if found and all(replay(c, plan, p / 100)[0] == "failed"
                                                                 for c, plan in found)), None)
        row.append(f"{smallest}%" if smallest else "> 30%")
        rows.append(row)
    header = ["case", *(f"{round(100 * s)}% slower caught" for s in SCALED), "smallest caught in every session"]
    return _table(header, rows)


def slowed_table(slowed: list[Session], case_ids: list[str]) -> list[str]:
    rows = []
    for cid in case_ids:
        found = [c for s in slowed if (c := _case(s, cid)) is not None]
        rows.append([cid, *(f"{c['decisions'].get('wall')} / {c['decisions'].get('speedup')}" for c in found)])
    return _table(["case", *(s["name"] for s in slowed)], rows)


def _infos(document: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A --benchmark-json document's draft cases' extra_info by case id."""
    return {e["extra_info"]["case_id"]: e["extra_info"] for e in (document or {}).get("benchmarks", [])
            if "ab" in e.get("extra_info", {})}


def _side_a(session: Session, out: Path) -> dict[str, dict[str, Any]]:
    path = out / "sessions" / session["name"] / "A.json"
    return _infos(json.loads(path.read_text())) if path.is_file() else {}


def corrupt_table(corrupt: list[Session], case_ids: list[str], out: Path) -> list[str]:
    """Per case: caught (the work comparison named differences), missed (B's work changed, none named), or
    unchanged (the injected fault did not alter this case's work: nothing to catch)."""
    columns = []
    for session in corrupt:
        b_infos, a_infos = _infos(session.get("bench")), _side_a(session, out)
        column = {}
        for cid in case_ids:
            b, a = b_infos.get(cid, {}), a_infos.get(cid, {})
            named = len(b.get("ab", {}).get("work_differences", []))
            changed = b.get("accept_counts") != a.get("accept_counts") or b.get("tokens") != a.get("tokens")
            column[cid] = (f"caught ({named} differences)" if named else
                           "missed" if changed else "unchanged (the fault altered no block of this case)")
        columns.append(column)
    return _table(["case", *(s["name"] for s in corrupt)], [[cid, *(c[cid] for c in columns)] for cid in case_ids])


def analyze(out: Path) -> str:
    sessions = load_sessions(out)
    aa, slowed, corrupt = _of(sessions, "aa"), _of(sessions, "slowed"), _of(sessions, "corrupt")
    defaults = [s for s in sessions if s["kind"] == "default"]
    case_ids = _cases(sessions)
    lines = ["# A/B gate study", "", f"{len(aa)} A/A sessions, {len(slowed)} slowed, {len(corrupt)} corrupt, "
             f"{len(defaults)} default runs, saved under `{out}`. Rebuilt with `python tools/ab_study.py --analyze "
             f"{out}`.", "", "## Sessions", "", *sessions_table(sessions), ""]
    if defaults and aa:
        default_s = statistics.median(s["wall_s"] for s in defaults)
        ab_s = statistics.median(s["wall_s"] for s in aa)
        lines += [f"Median A/A session {ab_s:.0f} s against a default run's {default_s:.0f} s: "
                  f"{ab_s / default_s:.2f}x (budget 1.5x).", ""]
    if aa:
        false = sum(d == DIFFERENT for s in aa for c in s["pairs"]["cases"] for d in c["decisions"].values())
        lines += ["## A/A: unchanged code against itself", "", f"{false} DIFFERENT decisions in all.", "",
                  *aa_table(aa, case_ids), "", "## Power: A/A sessions with side B scaled slower", "",
                  *power_table(aa, case_ids), ""]
    if slowed:
        lines += ["## Slowed sessions: side B's speculative path 5% slower (wall / speedup decision)", "",
                  *slowed_table(slowed, case_ids), ""]
    if corrupt:
        lines += ["## Corrupt sessions: side B's proposals corrupted (the exact work comparison)", "",
                  *corrupt_table(corrupt, case_ids, out), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "ab-study")
    ap.add_argument("--aa", type=int, default=10, help="A/A sessions of unchanged code (default 10)")
    ap.add_argument("--slowed", type=int, default=2, help="sessions with side B 5%% slower (default 2)")
    ap.add_argument("--corrupt", type=int, default=1, help="sessions with side B's proposals corrupted (default 1)")
    ap.add_argument("--default-runs", type=int, default=1, help="plain default runs, for the time budget (default 1)")
    ap.add_argument("--analyze", type=Path, default=None, help="only rebuild the tables from this directory")
    ap.add_argument("pytest_args", nargs="*", help="more pytest options for every session (after --)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.analyze or args.out
    if args.analyze is None:
        collect(out, schedule(args.aa, args.slowed, args.corrupt, args.default_runs), args.pytest_args)
    report = analyze(out)
    (out / "ab-study.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
