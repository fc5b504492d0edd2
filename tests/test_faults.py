"""Faults: injected regressions (tests/plugins/inject_faults.py, a test-only plugin) for tools/gate_quality.py,
out-of-memory cases, determinism."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys

import pytest
import yaml

import specperf
from specperf.bench.ab_session import SideSpec
from specperf.bench.audit import audit_drafter
from specperf.bench.suite import SuiteBench
from specperf.config import parse_config
from specperf.config.cases import build_cases
from specperf.errors import ConfigError
from tests.helpers import PERF_TESTS, ROOT, SUITE
from tests.plugins import inject_faults
from tests.plugins.inject_faults import (
    CorruptingDrafter,
    Faults,
    from_env,
    parse_faults,
    pytest_specperf_ab_side,
    slow_down,
    speed_up,
)
from tests.tiny_models import PROMPTS, VOCAB, clone_weights


def test_unset_injects_nothing(monkeypatch):
    monkeypatch.delenv("SPECPERF_INJECT", raising=False)
    faults = from_env()
    assert faults == Faults() and not faults.active and faults.describe() is None


def test_parse():
    faults = parse_faults("corrupt_every=20, spec_slowdown=0.15")
    assert faults == Faults(corrupt_every=20, spec_slowdown=0.15)
    assert faults.describe() == "corrupt_every=20,spec_slowdown=0.15"


@pytest.mark.parametrize("text, words", [
    ("slow=0.1", "unknown fault 'slow'"),
    ("spec_slowdown=fast", "needs a number"),
    ("baseline_speedup=1.0", "baseline_speedup < 1"),
])
def test_parse_rejects(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_faults(text)


def test_corruption_keeps_output_lowers_acceptance_and_replays(verifier):
    draft = clone_weights(verifier)  # accepts everything unless spoiled
    prompt, k, n = PROMPTS[0], 4, 60
    clean = specperf.decode(verifier, prompt, drafter=specperf.ModelDrafter(draft), k=k, max_new_tokens=n)
    spoiled = CorruptingDrafter(specperf.ModelDrafter(draft), every=5, vocab=VOCAB)
    bad = specperf.decode(verifier, prompt, drafter=spoiled, k=k, max_new_tokens=n)
    assert bad.tokens == clean.tokens  # greedy output is still the verifier's
    assert clean.accepted == clean.proposed and bad.accepted < bad.proposed
    replay = audit_drafter(CorruptingDrafter(specperf.ModelDrafter(draft), every=5, vocab=VOCAB), prompt,
                           bad.tokens, k=k, max_new_tokens=n)
    assert (replay.proposed, replay.accepted, replay.accept_counts) == (bad.proposed, bad.accepted,
                                                                          bad.accept_counts)


def test_speed_up_reports_a_fraction_of_the_wall_time(verifier):
    result = specperf.decode(verifier, PROMPTS[0], max_new_tokens=8)
    measured = result.wall_s
    assert speed_up(lambda i, p: [result], 0.25)(0, [PROMPTS[0]])[0].wall_s == pytest.approx(0.75 * measured)


def test_slow_down_sleeps_and_counts_the_sleep(verifier):
    result = specperf.decode(verifier, PROMPTS[0], max_new_tokens=8)
    measured = result.wall_s
    # time.sleep sleeps at least as long as asked, so this bound holds on any machine.
    assert slow_down(lambda i, p: [result], 0.5)(0, [PROMPTS[0]])[0].wall_s >= 1.5 * measured


def test_zero_fraction_is_the_identity():
    def decode(i: int, prompt: list[int]):
        raise AssertionError("not called")

    assert slow_down(decode, 0.0) is decode and speed_up(decode, 0.0) is decode


OOM_CONFTEST = '''
import pytest
import torch

from specperf.bench.runner import CaseRunner


@pytest.fixture(autouse=True)
def _oom_at_k2(monkeypatch):
    original = CaseRunner.benchmark_case

    def benchmark_case(self, case, benchmark):
        if case.k == 2:
            held = torch.ones(1024)  # noqa: F841 (a tensor the failing frame holds)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, case, benchmark)

    monkeypatch.setattr(CaseRunner, "benchmark_case", benchmark_case)
'''


@pytest.mark.slow
def test_out_of_memory_fails_that_case_only(pytester):
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    pytester.makeconftest(OOM_CONFTEST)
    result = pytester.runpytest_inprocess("--specperf-config=suite.yaml", "-p", "no:randomly",
                                          "--specperf-drafts=lookup")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*CaseOutOfMemory: lookup-k2-0:2: out of memory on cpu: CUDA out of memory. Tried to allocate 20.00 GiB",
        "*memory at the failure: no allocator figures for device cpu*The other cases go on*",
        "FAILED test_perf.py::test_speculative[[]lookup-k2-0:2[]]*",
    ])


def test_rerunning_a_case_in_one_session_is_deterministic():
    runner = SuiteBench(parse_config(yaml.safe_load(SUITE))).runner
    draft_cases, _ = build_cases(runner.store.config)
    cases = [c for c in draft_cases if c.draft.engine == "specperf"]
    first = {c.id: runner.pass_fn(c)() for c in cases}
    again = {c.id: runner.pass_fn(c)() for c in reversed(cases)}  # other cases ran in between
    for case_id, results in first.items():
        assert [(r.tokens, r.proposed, r.accepted, r.accept_counts) for r in results] == [
            (r.tokens, r.proposed, r.accepted, r.accept_counts) for r in again[case_id]], case_id


@pytest.mark.slow
def test_a_normal_run_ignores_the_switches(pytester, monkeypatch):
    """Without the test-only plugin, specperf never reads SPECPERF_INJECT: even a malformed value is ignored."""
    monkeypatch.setenv("SPECPERF_INJECT", "not a fault")
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    result = pytester.runpytest_inprocess("--specperf-config=suite.yaml", "-p", "no:randomly", "--specperf-k=2",
                                          "--specperf-drafts=lookup", "--benchmark-json=out.json")
    result.assert_outcomes(passed=2)
    infos = [b["extra_info"] for b in json.loads((pytester.path / "out.json").read_text())["benchmarks"]]
    assert [info["injected_faults"] for info in infos] == [None, None]


@pytest.mark.slow
def test_the_plugin_injects_and_says_so(pytester, monkeypatch):
    monkeypatch.setenv("SPECPERF_INJECT", "corrupt_every=3")
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    args = ("--specperf-config=suite.yaml", "-p", "no:randomly", "--specperf-k=2", "--specperf-drafts=small")
    clean = pytester.runpytest_inprocess(*args, "--benchmark-json=clean.json")
    monkeypatch.setenv("SPECPERF_INJECT", "corrupt_every=3")
    faulty = pytester.runpytest_inprocess(*args, "-p", "tests.plugins.inject_faults", "--benchmark-json=faulty.json")
    clean.assert_outcomes(passed=2)
    faulty.assert_outcomes(passed=2)
    case = {name: [b["extra_info"] for b in json.loads((pytester.path / name).read_text())["benchmarks"]
                   if b["extra_info"]["draft"] is not None][0] for name in ("clean.json", "faulty.json")}
    assert case["faulty.json"]["injected_faults"] == "corrupt_every=3"
    assert case["faulty.json"]["acceptance_aggregate"] < case["clean.json"]["acceptance_aggregate"]
    assert case["faulty.json"]["exact_match_rate"] == 1.0  # greedy output is still the verifier's


def test_the_ab_side_hook_injects_into_the_named_side_from_its_own_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECPERF_INJECT_SIDE", "B")
    a, b = (SideSpec(label, ROOT, sys.executable, tmp_path / "suite.yaml") for label in ("A", "B"))
    assert pytest_specperf_ab_side(config=None, side=a) is None
    faulty = pytest_specperf_ab_side(config=None, side=b)
    # The worker imports the module by name, its side's checkout first on the path.
    assert importlib.import_module(faulty.interventions) is inject_faults
    assert faulty.pythonpath == (str(ROOT),)
    with pytest.raises(pytest.UsageError, match="has no tests/plugins/inject_faults.py"):
        pytest_specperf_ab_side(config=None, side=dataclasses.replace(b, root=tmp_path))
