"""The pytest plugin end to end, with pytester: options, ids, the JSON contract, gates, hooks, errors, loads."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from specperf.analysis.contract import DraftInfo
from specperf.bench import store
from tests.helpers import PERF_TESTS, SUITE

# End to end: every test here runs a pytest session with pytester.
pytestmark = pytest.mark.slow

CONTRACT = sorted(DraftInfo.__required_keys__)  # every key a draft case writes (tests/test_contract.py)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("--specperf-config=suite.yaml", "-p", "no:randomly", *args)


def test_options_appear_in_help(pytester):
    result = pytester.runpytest_inprocess("--help")
    result.stdout.fnmatch_lines(["*specperf: speculative decoding benchmarks*", "*--specperf-config=PATH*",
                                 "*--specperf-k=K*", "*--specperf-baseline=PATH*", "*--specperf-report=DIR*"])


def test_ids_are_stable(suite):
    result = run(suite, "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "test_perf.py::test_baseline[baseline-0:2]",
        "test_perf.py::test_speculative[small-k2-0:2]",
        "test_perf.py::test_speculative[small-k3-0:2]",
        "test_perf.py::test_speculative[lookup-k2-0:2]",
        "test_perf.py::test_speculative[small-hf-k3-0:2]",
    ])


def test_command_line_narrows_the_matrix(suite):
    result = run(suite, "--collect-only", "-q", "--specperf-drafts=lookup", "--specperf-k=5")
    result.stdout.fnmatch_lines(["*test_speculative[[]lookup-k5-0:2[]]*", "*2 tests collected*"])


def test_json_carries_every_documented_key(suite, monkeypatch):
    loads: Counter[tuple[str, str, str]] = Counter()
    load_model = store.load_model

    def counting_load(name, **kwargs):
        loads[(name, kwargs["device"], kwargs["dtype"])] += 1
        return load_model(name, **kwargs)

    monkeypatch.setattr(store, "load_model", counting_load)
    result = run(suite, "--benchmark-json=out.json")
    result.assert_outcomes(passed=7)
    data = json.loads((suite.path / "out.json").read_text())
    cases = {b["extra_info"]["case_id"]: b["extra_info"] for b in data["benchmarks"]}
    assert set(cases) == {"baseline-0:2", "small-k2-0:2", "small-k3-0:2", "lookup-k2-0:2", "lookup-k3-0:2",
                          "small-hf-k2-0:2", "small-hf-k3-0:2"}
    for case_id, info in cases.items():
        if case_id.startswith("baseline"):
            continue
        missing = [key for key in CONTRACT if key not in info]
        assert not missing, f"{case_id} lacks {missing}"
        assert info["exact_match_rate"] == 1.0
    # The HF engine hides its counters: acceptance comes from the audit, never a fake zero.
    assert cases["small-hf-k2-0:2"]["acceptance_aggregate"] == cases["small-k2-0:2"]["acceptance_aggregate"]
    specperf_info = data["machine_info"]["specperf"]
    assert {"torch", "transformers", "cuda", "gpu", "config_hash"} <= set(specperf_info)
    assert specperf_info["forward"] == "lean"
    # Each model loaded once for the whole session, whatever the number of cases.
    assert loads[("embedded:verifier", "cpu", "float32")] == 1
    assert loads[("embedded:draft-small", "cpu", "float32")] == 1
    result.stdout.fnmatch_lines(["*performance per case*", "*acceptance per draft*"])


def test_floor_violation_fails_with_its_message(suite):
    suite.makefile(".yaml", thresholds="default:\n  min_acceptance: 0.99\n")
    result = run(suite, "--specperf-thresholds=thresholds.yaml", "--specperf-drafts=small", "--specperf-k=2")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*RegressionDetected: small-k2-0:2: acceptance_aggregate regressed*"
                                 "allowed bound 0.99*min_acceptance*"])


def test_baseline_gate_catches_an_acceptance_drop_and_passes_a_rerun(suite):
    # The reruns are compared on their work (acceptance is deterministic), so they need no timed rounds.
    narrow = ("--specperf-drafts=small,lookup", "--specperf-k=2")
    run(suite, "--benchmark-json=old.json", *narrow).assert_outcomes(passed=3)
    run(suite, "--specperf-baseline=old.json", "--benchmark-disable", *narrow).assert_outcomes(passed=3)
    data = json.loads((suite.path / "old.json").read_text())
    for bench in data["benchmarks"]:
        if bench["extra_info"]["case_id"] == "small-k2-0:2":
            bench["extra_info"]["acceptance_aggregate"] += 0.05
    (suite.path / "inflated.json").write_text(json.dumps(data))
    result = run(suite, "--specperf-baseline=inflated.json", "--benchmark-disable", *narrow)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*small-k2-0:2: acceptance_aggregate regressed: baseline run*"])


def test_several_baseline_runs_or_a_folder(suite):
    """--specperf-baseline repeats, and takes folders: the newest run sets the work metrics' reference."""
    narrow = ("--specperf-drafts=lookup", "--specperf-k=2")
    (suite.path / "main").mkdir()
    for name in ("main/a.json", "main/b.json"):
        run(suite, f"--benchmark-json={name}", *narrow).assert_outcomes(passed=2)
    run(suite, "--specperf-baseline=main", "--benchmark-disable", *narrow).assert_outcomes(passed=2)
    run(suite, "--specperf-baseline=main/a.json", "--specperf-baseline=main/b.json", "--benchmark-disable",
        *narrow).assert_outcomes(passed=2)
    result = run(suite, "--specperf-baseline=nowhere", *narrow)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no such file or directory: nowhere*"])


def test_record_hook_is_called(suite):
    suite.makeconftest("""
        import json
        def pytest_specperf_record(config, case, metrics, extra_info):
            with open("recorded.jsonl", "a") as f:
                f.write(json.dumps({"case": case.id, "speedup": metrics.get("speedup")}) + "\\n")
    """)
    run(suite, "--specperf-drafts=lookup", "--specperf-k=2").assert_outcomes(passed=2)
    lines = [json.loads(x) for x in (suite.path / "recorded.jsonl").read_text().splitlines()]
    assert [x["case"] for x in lines] == ["baseline-0:2", "lookup-k2-0:2"]
    assert lines[1]["speedup"] > 0


def test_bad_yaml_is_a_usage_error(pytester):
    pytester.makefile(".yaml", suite="verifier: [unclosed\n")
    result = pytester.runpytest_inprocess("--specperf-config=suite.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*specperf:*suite.yaml*line*"])


def test_bad_option_values_are_refused(pytester):
    result = pytester.runpytest_inprocess("--specperf-k=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--specperf-k*each k must be in 1..64*"])
    result = pytester.runpytest_inprocess("--specperf-config=missing.yaml")
    result.stderr.fnmatch_lines(["*no such file: missing.yaml*"])


def test_report_option_writes_a_summary(suite):
    run(suite, "--specperf-drafts=lookup", "--specperf-k=2", "--specperf-report=rep").assert_outcomes(passed=2)
    text = (suite.path / "rep" / "summary.md").read_text()
    assert "lookup-k2-0:2" in text and "Acceptance per draft" in text
    report = (suite.path / "rep" / "report.md").read_text()
    assert "lookup-k2-0:2" in report and "speedup.png" in report
    assert (suite.path / "rep" / "speedup.png").stat().st_size > 1000


def test_batch_size_is_an_axis_with_suffixed_ids(suite):
    result = run(suite, "--collect-only", "-q", "--specperf-batch=1,2")
    result.stdout.fnmatch_lines([
        "test_perf.py::test_baseline[[]baseline-0:2[]]",
        "test_perf.py::test_baseline[[]baseline-0:2-b2[]]",
        "test_perf.py::test_speculative[[]small-k2-0:2[]]",  # batch 1 keeps the ids baselines already hold
        "test_perf.py::test_speculative[[]small-k2-0:2-b2[]]",
        "test_perf.py::test_speculative[[]lookup-k3-0:2-b2[]]",
    ])
    assert "small-hf-k2-0:2-b2" not in result.stdout.str()  # transformers' assisted generation is batch 1 only


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_batch_sizes_are_refused(suite, value):
    result = run(suite, "--collect-only", f"--specperf-batch={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--specperf-batch*"])


# --------------------------------------------------------------------------- sampling suites (issue 16, bug 1)

SAMPLING_SUITE = SUITE.replace("generation:\n  max_new_tokens: 12",
                               "generation:\n  max_new_tokens: 12\n  temperature: 0.8")
NO_THRESHOLDS = SAMPLING_SUITE[:SAMPLING_SUITE.index("thresholds:")]  # only the default min_exact_match: 1.0


def test_sampling_suites_do_not_gate_exactness(pytester):
    """Sampled output differs from the baseline's by design: the exact-match floor must not fail the case, at
    batch 1 or batched."""
    pytester.makefile(".yaml", suite=NO_THRESHOLDS)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    batch = "1,2"
    result = run(pytester, f"--specperf-batch={batch}", "--specperf-drafts=small,lookup", "--specperf-k=2",
                 "--benchmark-json=out.json", "--specperf-report=rep")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*note: exact-match floor not applied: the suite samples (temperature > 0)*"])
    infos = [b["extra_info"] for b in json.loads((pytester.path / "out.json").read_text())["benchmarks"]]
    drafts = [info for info in infos if info["draft"] is not None]
    assert drafts and all(info["exact_match_gated"] is None for info in drafts)
    assert any(info["exact_match_rate"] < 1.0 for info in drafts)  # the outputs really differ from the baseline's
    assert "exact-match floor not applied" in (pytester.path / "rep" / "report.md").read_text()
    # Gated against a sampling run of its own, exactness (a random figure here) is not compared either.
    # (--benchmark-disable: timing is not the subject here, and these tiny runs drift more than min_effect.)
    assert {info["batch_size"] for info in drafts} == {1, 2}
    again = run(pytester, f"--specperf-batch={batch}", "--specperf-drafts=small,lookup", "--specperf-k=2",
                "--specperf-baseline=out.json", "--benchmark-disable")
    again.assert_outcomes(passed=6)


def test_sampling_still_gates_acceptance(pytester):
    pytester.makefile(".yaml", suite=NO_THRESHOLDS + "thresholds:\n  default:\n    min_acceptance: 0.999\n")
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    result = run(pytester, "--specperf-drafts=lookup", "--specperf-k=2")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*lookup-k2-0:2: acceptance_aggregate regressed*min_acceptance = 0.999*"])


# --------------------------------------------------------------------------- --benchmark-disable / -skip (bug 2)


def test_benchmark_disable_runs_each_case_once_and_skips_timing_gates(suite):
    """pytest-benchmark's smoke mode: every case decodes once, the deterministic gates apply, timing ones do not."""
    suite.makefile(".yaml", thresholds="default:\n  min_speedup: 100.0\n")  # no case is 100x faster
    result = run(suite, "--benchmark-disable", "--specperf-thresholds=thresholds.yaml",
                 "--specperf-drafts=small,lookup", "--specperf-k=2")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*note: timing gates skipped: --benchmark-disable decoded each case once*",
                                 "*small-k2-0:2*"])


def test_benchmark_disable_still_fails_a_deterministic_gate(suite):
    suite.makefile(".yaml", thresholds="drafts:\n  lookup:\n    min_acceptance: 0.999\n")
    result = run(suite, "--benchmark-disable", "--specperf-thresholds=thresholds.yaml",
                 "--specperf-drafts=small,lookup", "--specperf-k=2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*lookup-k2-0:2: acceptance_aggregate regressed*"])


def test_benchmark_disable_timed_run_still_fails_the_speedup_floor(suite):
    """The same impossible floor fails a timed run: --benchmark-disable is what turns it off."""
    suite.makefile(".yaml", thresholds="default:\n  min_speedup: 100.0\n")
    result = run(suite, "--specperf-thresholds=thresholds.yaml", "--specperf-drafts=lookup", "--specperf-k=2")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*lookup-k2-0:2: speedup regressed*min_speedup = 100.0*"])


def test_benchmark_skip_skips_every_case(suite):
    result = run(suite, "--benchmark-skip")
    result.assert_outcomes(skipped=7)
    assert "performance per case" not in result.stdout.str()  # nothing ran, so no tables


@pytest.mark.parametrize("path, words", [("missing.jsonl", "prompt file not found: missing.jsonl"),
                                         ("a_dir", "a_dir is not a file")])
def test_a_bad_dataset_path_is_a_usage_error_at_start(pytester, path, words):
    """Reported when pytest starts (exit code 4, one line), not as a traceback inside the first case."""
    (pytester.path / "a_dir").mkdir()
    suite = SUITE.replace("  source: embedded\n", f"  source: file\n  path: {path}\n")
    pytester.makefile(".yaml", suite=suite)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*specperf: dataset.path: {words}*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


# --------------------------------------------------------------------------- host-tool modes users rely on


def test_k_selects_cases(suite):
    result = run(suite, "-k", "lookup and k2", "--benchmark-disable", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_speculative[[]lookup-k2-0:2[]] PASSED*"])


def test_x_stops_at_the_first_failing_case(suite):
    suite.makefile(".yaml", thresholds="default:\n  min_acceptance: 0.999\n")  # every draft case fails
    result = run(suite, "-x", "--benchmark-disable", "--specperf-thresholds=thresholds.yaml")
    result.assert_outcomes(passed=1, failed=1)  # the baseline, then the first draft case


def test_no_specperf_unloads_the_plugin(suite):
    result = suite.runpytest_inprocess("-p", "no:specperf", "--collect-only", "-q")
    assert "--specperf-config" not in suite.runpytest_inprocess("-p", "no:specperf", "--help").stdout.str()
    result.stdout.fnmatch_lines(["*test_perf.py::test_baseline*"])  # collected, unparametrized, nothing loaded


def test_autosave_then_compare(suite):
    """pytest-benchmark's own saved runs and --benchmark-compare work with specperf's cases."""
    narrow = ("--specperf-drafts=lookup", "--specperf-k=2", "--benchmark-storage=file://store")
    run(suite, *narrow, "--benchmark-autosave").assert_outcomes(passed=2)
    saved = list((suite.path / "store").rglob("0001_*.json"))
    assert len(saved) == 1 and "lookup-k2-0:2" in saved[0].read_text()
    result = run(suite, *narrow, "--benchmark-compare=0001")
    result.assert_outcomes(passed=2)
    result.stderr.fnmatch_lines(["*Comparing against benchmarks from*0001_*"])
    # pytest-benchmark's table has a row for the saved run and one for this run, in order of speed (either first)
    result.stdout.fnmatch_lines(["*lookup-k2-0:2[]] (0001_*"])
    result.stdout.fnmatch_lines(["*lookup-k2-0:2[]] (NOW)*"])
    assert "machine_info is different" not in result.stdout.str() + result.stderr.str()
