"""Scale-out across CI runners: --specperf-shard I/N splits the cases, `specperf merge` puts the run back together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specperf.cli import main
from specperf.config.cases import Case, Shard
from tests.helpers import PERF_TESTS, SUITE, load_cases

WORK = ("acceptance_aggregate", "alpha", "accept_counts", "mean_accepted_length", "exact_match_rate",
        "verifier_calls_per_token", "position_acceptance", "new_tokens")
NARROW = ("--specperf-drafts=small,lookup", "--specperf-k=2,3")  # 5 cases: a baseline and 4 draft cases


def test_shards_are_balanced_disjoint_and_cover_the_suite():
    cases = [Case(None, 0, f"{i}:{i + 1}") for i in range(10)]
    ids = [c.id for c in cases]
    shares = [Shard(i, 3).select(cases, ids) for i in (1, 2, 3)]
    assert sorted(len(s) for s in shares) == [3, 3, 4]
    assert sorted(c.id for s in shares for c in s) == sorted(ids)
    assert Shard(2, 3).select(list(reversed(cases)), ids) == list(reversed(shares[1]))  # by id, not by order


@pytest.fixture
def runs(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    base = ("--specperf-config=suite.yaml", "-p", "no:randomly", *NARROW)
    pytester.runpytest_inprocess(*base, "--benchmark-json=whole.json").assert_outcomes(passed=5)
    for i in (1, 2, 3):
        result = pytester.runpytest_inprocess(*base, f"--specperf-shard={i}/3", f"--benchmark-json=shard{i}.json")
        assert result.ret == 0 and result.parseoutcomes()["passed"] in (1, 2)  # 5 cases in 3 shards
    return pytester


def test_three_shards_merged_equal_the_whole_run_and_bad_merges_are_refused(runs, capsys):
    shards = [str(runs.path / f"shard{i}.json") for i in (1, 2, 3)]
    assert main(["merge", *shards, "-o", str(runs.path / "merged.json")]) == 0
    whole, merged = load_cases(runs.path / "whole.json"), load_cases(runs.path / "merged.json")
    assert sorted(merged) == sorted(whole)
    for case_id, info in whole.items():
        assert {k: info.get(k) for k in WORK} == {k: merged[case_id].get(k) for k in WORK}, case_id
    capsys.readouterr()
    # Every reader of a whole run takes the merged file.
    assert main(["compare", str(runs.path / "whole.json"), str(runs.path / "merged.json"),
                 "--config", str(runs.path / "suite.yaml")]) == 0
    assert main(["report", str(runs.path / "merged.json"), "--out", str(runs.path / "rep")]) == 0
    own = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(runs.path / "merged.json")],
                         capture_output=True, text=True, timeout=120)
    assert own.returncode == 0 and "lookup-k2-0:2" in own.stdout, own.stderr
    gated = runs.runpytest_inprocess("--specperf-config=suite.yaml", "-p", "no:randomly", *NARROW,
                                     "--specperf-baseline=merged.json", "--benchmark-disable")
    gated.assert_outcomes(passed=5)
    capsys.readouterr()
    check_refusals(runs.path, capsys)


def _edit(src: Path, dst: Path, edit) -> Path:
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))
    return dst


def check_refusals(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Shards of another machine, commit or suite, a shard twice, a shard missing: exit 2, nothing written."""
    s1, s2, s3 = (str(path / f"shard{i}.json") for i in (1, 2, 3))
    out = str(path / "refused.json")
    other_cpu = _edit(path / "shard3.json", path / "cpu.json",
                      lambda d: d["machine_info"]["cpu"].update(brand_raw="Another CPU"))
    other_commit = _edit(path / "shard3.json", path / "commit.json",
                         lambda d: d["commit_info"].update(id="0123456789abcdef"))
    other_suite = _edit(path / "shard3.json", path / "suite.json",
                        lambda d: d["machine_info"]["specperf"].update(config_hash="ffffffffffffffff"))
    cases = [([s1, s2, s1, s3], "is in two shards"), ([s1, s2], "the shards lack"),
             ([s1, s2, str(other_cpu)], "different kinds of machine"),
             ([s1, s2, str(other_commit)], "different commits"), ([s1, s2, str(other_suite)], "different suites")]
    for shards, words in cases:
        assert main(["merge", *shards, "-o", out]) == 2
        assert words in capsys.readouterr().err
        assert not Path(out).exists()  # nothing half-written
