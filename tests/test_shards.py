"""Scale-out across CI runners: --specperf-shard I/N splits the cases, `specperf merge` puts the run back together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specperf.cli import main
from specperf.config.cases import Case, Shard
from tests.helpers import PERF_TESTS, RUN_BATCH, RUN_DRAFTS, SUITE, load_cases

WORK = ("acceptance_aggregate", "alpha", "accept_counts", "mean_accepted_length", "exact_match_rate",
        "verifier_calls_per_token", "position_acceptance", "new_tokens")
NARROW = ("--specperf-drafts=small,lookup", "--specperf-k=2")  # 3 cases: a baseline and 2 draft cases


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
    pytester.runpytest_inprocess(*base, "--benchmark-json=whole.json").assert_outcomes(passed=3)
    for i in (1, 2, 3):
        result = pytester.runpytest_inprocess(*base, f"--specperf-shard={i}/3", f"--benchmark-json=shard{i}.json")
        assert result.ret == 0 and result.parseoutcomes()["passed"] == 1  # 3 cases in 3 shards
    return pytester


@pytest.mark.slow
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
    gated.assert_outcomes(passed=3)
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


def _split(bench_json: Path, folder: Path, first: set[str]) -> tuple[Path, Path]:
    """Two shard-like files of one whole run: the cases in ``first``, and the others."""
    data = json.loads(bench_json.read_text())
    paths = []
    for i, keep in enumerate((lambda c: c in first, lambda c: c not in first), start=1):
        part = {**data, "benchmarks": [b for b in data["benchmarks"] if keep(b["extra_info"]["case_id"])]}
        paths.append(folder / f"part{i}.json")
        paths[-1].write_text(json.dumps(part))
    return paths[0], paths[1]


@pytest.mark.slow
def test_a_case_that_errored_is_present_in_the_merge_and_skipped_by_its_readers(
        bench_json: Path, bench_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plugin names a case before it runs: one that errors after its timed rounds leaves an entry with its
    case_id and no metric. The merge counts it; compare lists it and fails (nothing of it was gated)."""
    first, second = _split(bench_json, tmp_path, {"baseline-0:2", "small-k2-0:2", "small-k3-0:2"})
    errored = "small-k2-0:2"
    _edit(first, first, lambda d: [b.update(extra_info={"case_id": errored}) for b in d["benchmarks"]
                                   if b["extra_info"]["case_id"] == errored])
    merged = tmp_path / "merged.json"
    assert main(["merge", str(first), str(second), "-o", str(merged)]) == 0, capsys.readouterr().err
    assert load_cases(merged)[errored] == {"case_id": errored}
    assert sorted(load_cases(merged)) == sorted(load_cases(bench_json))
    capsys.readouterr()
    assert main(["compare", str(bench_json), str(merged), "--config", str(bench_suite)]) == 1
    err = capsys.readouterr().err
    assert f"1 case(s) of {merged} errored before recording their metrics" in err and errored in err
    # Without its entry the case is missing, and the merge names it.
    _edit(first, first, lambda d: d.update(benchmarks=[b for b in d["benchmarks"]
                                                       if b["extra_info"]["case_id"] != errored]))
    assert main(["merge", str(first), str(second), "-o", str(tmp_path / "refused.json")]) == 2
    err = capsys.readouterr().err
    assert "the shards lack 1 of the suite's" in err and errored in err


@pytest.fixture
def suite_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    return pytester


def _collect(pytester: pytest.Pytester, baseline: Path) -> pytest.RunResult:
    return pytester.runpytest_inprocess("--specperf-config=suite.yaml", "-p", "no:randomly", "--collect-only",
                                        f"--specperf-batch={RUN_BATCH}", f"--specperf-drafts={RUN_DRAFTS}",
                                        f"--specperf-baseline={baseline}")


@pytest.mark.slow
def test_the_plugin_refuses_a_baseline_of_another_kind_of_machine(bench_json: Path, suite_dir: pytest.Pytester) -> None:
    here = json.loads(bench_json.read_text())["machine_info"]["specperf"]
    other = _edit(bench_json, suite_dir.path / "other.json",
                  lambda d: d["machine_info"]["specperf"].update(torch="1.0.0+cu999", gpu="NVIDIA A100-SXM4-80GB"))
    result = _collect(suite_dir, other)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*baseline runs of another kind of machine than this machine: *other.json: "
                                 f"gpu 'NVIDIA A100-SXM4-80GB' (vs None), torch '1.0.0+cu999' (vs '{here['torch']}')*"
                                 "fix: pass a baseline recorded on this kind of machine*"])
    same = _collect(suite_dir, bench_json)
    assert same.ret == pytest.ExitCode.OK, same.stdout.str()[-2000:] + same.stderr.str()[-2000:]


@pytest.mark.slow
def test_the_plugin_skips_an_errored_baseline_case_with_a_warning(bench_json: Path,
                                                                  suite_dir: pytest.Pytester) -> None:
    errored = _edit(bench_json, suite_dir.path / "errored.json", lambda d: [
        b.update(extra_info={"case_id": "small-k2-0:2"}) for b in d["benchmarks"]
        if b["extra_info"]["case_id"] == "small-k2-0:2"])
    result = _collect(suite_dir, errored)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()[-2000:]
    result.stdout.fnmatch_lines(["*lacks 1 of this run's 8 draft case(s) (small-k2-0:2; 1 of them errored there, "
                                 "with no metrics); only absolute floors gate those*"])
