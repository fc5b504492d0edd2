"""The in-session A/B end to end: two real worker processes on the embedded family, round by round.

Side A is this very checkout (an A/A comparison) or the same code with a test-only fault in one side's worker
(``SPECPERF_INJECT_SIDE``), so each test knows the truth it must find. The suite is the tests' tiny one, narrowed to
one draft case, so a session takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import PERF_TESTS, ROOT, SUITE, load_cases

# End to end: every test here runs a pytest session in process, most with two real A/B workers.
pytestmark = pytest.mark.slow

ARGS = ("--specperf-config=suite.yaml", "-p", "no:randomly", "--specperf-drafts=small", "--specperf-k=2",
        f"--specperf-ab={ROOT}", "--specperf-ab-out=ab", "--benchmark-json=b.json")


def _setup(pytester: pytest.Pytester, suite: str = SUITE) -> None:
    pytester.makefile(".yaml", suite=suite)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())


def _faulty_side_b(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, faults: str) -> None:
    """The tiny suite, with the test-only plugin injecting ``faults`` into side B's worker only."""
    monkeypatch.setenv("SPECPERF_INJECT", faults)
    monkeypatch.setenv("SPECPERF_INJECT_SIDE", "B")
    _setup(pytester)


def _no_workers_left(*where: Path) -> bool:
    """No ab_worker process started for the session in ``where`` is alive (a suite file of it lies there; other A/B
    sessions on the machine, a study say, are not this test's)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"ab_worker.py" in cmdline and any(str(w).encode() in cmdline for w in where):
                return False
    return True


def test_a_against_itself_is_not_different_and_writes_both_sides(pytester):
    _setup(pytester)
    # 10 pairs, the fewest that decide at alpha 0.01; a 10% min effect keeps drift on this shared machine from ever
    # reading DIFFERENT (how small a change is caught, and how often A/A is, is the study's question).
    result = pytester.runpytest_inprocess(*ARGS, "--specperf-ab-alpha=0.01", "--specperf-ab-min-effect=0.1",
                                          "--specperf-ab-max-pairs=10")
    result.assert_outcomes(passed=1, skipped=1)  # the baseline case is paired inside the draft case
    result.stdout.fnmatch_lines(["*A/B: side A*", "*small-k2-0:2*wall*", "*small-k2-0:2*speedup*"])
    assert "DIFFERENT" not in result.stdout.str()
    b_info = load_cases(pytester.path / "b.json")["small-k2-0:2"]
    a_doc = json.loads((pytester.path / "ab" / "A.json").read_text())
    (a_info,) = [b["extra_info"] for b in a_doc["benchmarks"]]
    assert a_info["case_id"] == b_info["case_id"] == "small-k2-0:2"
    assert b_info["ab"]["work_differences"] == [] and b_info["ab"]["work_compared"]
    assert b_info["ab"]["pairs"] == 10
    # Same code, same greedy work: the deterministic figures agree exactly.
    for key in ("acceptance_aggregate", "mean_accepted_length", "accept_counts", "exact_match_rate"):
        assert a_info[key] == b_info[key], key
    for name in ("ab.md", "ab.csv", "ab.png", "pairs.json", "worker-A.log", "worker-B.log"):
        assert (pytester.path / "ab" / name).is_file(), name
    # The tiny suite runs one torch thread per side on a CPU: both sides at once, each pinned to its own CPU, the
    # CPUs swapped ABBA.
    pairs = json.loads((pytester.path / "ab" / "pairs.json").read_text())
    expected = "duet" if sys.platform.startswith("linux") and len(os.sched_getaffinity(0)) >= 2 else "alternate"
    assert pairs["grain"] == expected
    (raw,) = pairs["cases"]
    assert len(raw["A"]["spec_s"]) == len(raw["B"]["spec_s"]) == b_info["ab"]["pairs"]
    if expected == "duet":
        cpus = [tuple(c) for c in raw["A"]["cpus"][:4]]
        assert cpus[0] == cpus[3] != cpus[1] == cpus[2]  # A B B A over the CPU sets
        assert [tuple(c) for c in raw["B"]["cpus"][:1]] != cpus[:1]
    assert f"Grain: {expected}." in (pytester.path / "ab" / "ab.md").read_text()
    assert _no_workers_left(pytester.path)


def test_a_slower_side_b_is_caught_as_different_in_fresh_workers(pytester, monkeypatch):
    """The case grain, for verifiers too large for both sides at once: each pair is a whole run of the case by each
    side, each in a fresh worker narrowed to that case. Side B twice as slow is unmistakable even on a loaded
    machine (the study measures how small a change is caught): a loose alpha lets 3 pairs decide, and a 50% min
    effect keeps this noisy machine's pairs from deciding anything smaller."""
    _faulty_side_b(pytester, monkeypatch, "spec_slowdown=1.0")
    result = pytester.runpytest_inprocess(*ARGS, "-p", "tests.plugins.inject_faults", "--specperf-ab-grain=case",
                                          "--specperf-ab-alpha=0.9", "--specperf-ab-min-effect=0.5",
                                          "--specperf-ab-max-pairs=3")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*AbRegression: small-k2-0:2: * B/A *DIFFERENT slower*"])
    info = load_cases(pytester.path / "b.json")["small-k2-0:2"]
    decisions = {r["metric"]: (r["decision"], r["direction"]) for r in info["ab"]["results"]}
    assert ("DIFFERENT", "slower") in decisions.values(), decisions
    pairs = json.loads((pytester.path / "ab" / "pairs.json").read_text())
    assert pairs["grain"] == "case"
    (raw,) = pairs["cases"]
    assert len(raw["A"]["spec_s"]) == len(raw["B"]["spec_s"]) == 3
    report = (pytester.path / "ab" / "ab.md").read_text()
    assert "Grain: case. Each pair is one whole case run of A and one of B" in report
    # The start-up check loads no model; each of the 3 runs loads the case's models afresh.
    assert (pytester.path / "ab" / "worker-A.log").read_text().count("Loading weights") >= 3
    assert _no_workers_left(pytester.path)


def test_a_corrupted_draft_on_side_b_is_named_by_the_work_comparison(pytester, monkeypatch):
    _faulty_side_b(pytester, monkeypatch, "corrupt_every=3")
    # The work comparison at the first look fails the case, whatever the timing: a loose alpha makes that look come
    # after 3 pairs. One side at a time here (the A/A test runs both at once where it can).
    result = pytester.runpytest_inprocess(*ARGS, "-p", "tests.plugins.inject_faults", "--specperf-ab-alpha=0.9",
                                          "--specperf-ab-max-pairs=3", "--specperf-ab-grain=alternate")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*small-k2-0:2: request * accepted A *, B *"])
    assert "Grain: alternate." in (pytester.path / "ab" / "ab.md").read_text()


def test_sides_whose_cases_differ_are_refused_at_start(pytester, tmp_path):
    _setup(pytester)
    other = tmp_path / "a.yaml"
    other.write_text(SUITE.replace('slices: ["0:2"]', 'slices: ["0:3"]'))
    result = pytester.runpytest_inprocess(*ARGS, f"--specperf-ab-config={other}")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*side A's suite*lacks 1 of this session's case(s): small-k2-0:2*"])
    assert _no_workers_left(pytester.path, tmp_path)


def test_a_path_that_is_not_a_checkout_is_a_usage_error(pytester, tmp_path):
    _setup(pytester)
    result = pytester.runpytest_inprocess("--specperf-config=suite.yaml", f"--specperf-ab={tmp_path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not a specperf checkout*"])


def test_a_worker_that_dies_is_reported_with_its_log(pytester, tmp_path):
    _setup(pytester)
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'side A cannot import torch' >&2\nexit 3\n")
    broken.chmod(0o755)
    result = pytester.runpytest_inprocess(*ARGS, f"--specperf-ab-python={broken}")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*WorkerDied: side A*exited with status 3*", "*side A cannot import torch*"])


def test_a_killed_worker_fails_the_session_cleanly(pytester):
    """A worker killed mid-session: the case errors with its log tail and the other worker is stopped."""
    _setup(pytester)
    # A plugin of its own name: in-process pytester runs may reuse an earlier test's module named conftest.
    pytester.makepyfile(ab_kill_side_a='''
import os, signal
import pytest
from specperf.bench import ab_session

original = ab_session.AbRunner.run_case

def run_case(self, case_id, plan, **options):
    os.kill(self.workers["A"].process.pid, signal.SIGKILL)
    return original(self, case_id, plan, **options)

@pytest.fixture(autouse=True)
def _kill(monkeypatch):
    monkeypatch.setattr(ab_session.AbRunner, "run_case", run_case)
''')
    # In a process of its own: patching the runner class must not depend on what earlier in-process runs imported.
    result = pytester.runpytest_subprocess(*ARGS, "-p", "ab_kill_side_a")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*WorkerDied: side A*exited with status -9*"])
    assert _no_workers_left(pytester.path)
    assert signal.SIGKILL  # the kill above is what the test exercises
