"""The greedy replay of the acceptance slice and the time breakdown, on the embedded family: the replay's figures are
exact (they equal what the engine does when it decodes), and the breakdown's parts add up to its pass."""

from __future__ import annotations

import pytest

from specperf.bench.suite import SuiteBench
from specperf.config import parse_config
from specperf.config.cases import build_cases
from specperf.engine.decode import decode

SUITE = {"verifier": "embedded:verifier", "device": "cpu", "threads": 1,
         "drafts": [{"name": "small", "model": "embedded:draft-small"}, {"name": "lookup", "drafter": "prompt-lookup"}],
         "k": [2], "dataset": {"source": "embedded", "slices": ["0:2"], "acceptance_slice": "2:5"},
         "generation": {"max_new_tokens": 12}}


@pytest.fixture(scope="module")
def bench() -> SuiteBench:
    return SuiteBench(parse_config(SUITE))


@pytest.mark.parametrize("draft", ["small", "lookup"])
def test_the_replay_predicts_the_engines_verifier_calls_at_every_k(bench: SuiteBench, draft: str) -> None:
    """For each k, the replay's tokens and verifier calls over the acceptance slice are exactly what specperf's loop
    makes decoding those prompts at that k; and its acceptance at the case's k equals the engine's counters."""
    case = next(c for c in build_cases(bench.config)[0] if c.draft is not None and c.draft.name == draft)
    replay = bench.replayer.case(case)
    assert replay is not None
    slice_name, audits, calls_by_k = replay
    assert slice_name == "2:5" and len(audits) == 3 and sorted(calls_by_k) == list(range(1, 9))
    verifier, prompts = bench.store.verifier.model, bench.store.prompts("2:5").ids
    drafter = bench.runner.drafter(case.draft)  # type: ignore[arg-type]
    for k in (1, 2, 5):
        results = [decode(verifier, p, drafter=drafter, k=k, max_new_tokens=12) for p in prompts]
        assert calls_by_k[k] == (sum(r.new_tokens for r in results), sum(r.verifier_calls for r in results)), k
        if k == case.k:
            assert [(a.proposed, a.accepted) for a in audits] == [(r.proposed, r.accepted) for r in results]
    assert bench.replayer.case(case) is replay  # cached for the session: every batch size shares it


def test_sampling_has_no_replay() -> None:
    config = parse_config({**SUITE, "generation": {"max_new_tokens": 12, "temperature": 0.7}})
    bench = SuiteBench(config)
    assert bench.replayer.case(build_cases(config)[0][0]) is None


@pytest.mark.parametrize("draft", [None, "small", "lookup"])
def test_the_breakdown_adds_up_to_its_pass(bench: SuiteBench, draft: str | None) -> None:
    cases = build_cases(bench.config)
    case = cases[1][0] if draft is None else next(c for c in cases[0] if c.draft and c.draft.name == draft)
    split = bench.time_split(case)
    assert split.new_tokens == 24 and split.wall_s > 0
    assert 0 < split.verifier_s < split.wall_s
    assert split.verifier_s + split.draft_s + split.other_s == pytest.approx(split.wall_s)
    if draft is None:
        assert split.draft_s == 0.0
    else:
        assert split.draft_s > 0.0  # draft forwards, or the lookup's propose
    # The hooks and the wrapper are gone afterwards: nothing is left on the models or the drafter.
    assert not bench.store.verifier.model._forward_hooks and not bench.store.verifier.model._forward_pre_hooks
    if draft == "lookup":
        assert "propose" not in vars(bench.runner.drafter(case.draft))  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_real_runs_replay_matches_its_timed_requests(bench_json) -> None:
    """Without an acceptance slice the replay covers the case's own slice: at the case's k its tokens per call and
    acceptance are exactly the engine's; every case of the run has a time breakdown and a k prediction."""
    from helpers import load_cases

    for case_id, info in load_cases(bench_json).items():
        assert info["time_verifier_share"] is not None and info["time_verifier_per_token"] > 0, case_id
        if info["draft"] is None:
            continue
        assert info["acceptance_samples"] == info["n_requests"] and info["acceptance_sample_slice"] == info["slice"]
        assert info["replay_acceptance_aggregate"] == info["acceptance_aggregate"], case_id
        per_call = info["predicted_tokens_per_call_by_k"]
        assert sorted(per_call, key=int) == [str(k) for k in range(1, 9)]
        assert per_call[str(info["k"])] == info["mean_accepted_length"], case_id
        if info["batch_size"] == 1:
            assert info["predicted_speedup_by_k"][str(info["k"])] == pytest.approx(info["speedup"])
            assert 1 <= info["best_k"] <= 8 and info["speedup_bound"] > 0


def test_breakdown_false_skips_the_pass(bench: SuiteBench) -> None:
    """timing.breakdown: false leaves the time keys null and runs no instrumented pass."""
    import dataclasses

    from specperf.analysis.extract import breakdown_metrics

    config = dataclasses.replace(bench.config, timing=dataclasses.replace(bench.config.timing, breakdown=False))
    quiet = SuiteBench(config)
    quiet.store, quiet.runner = bench.store, bench.runner  # the loaded models; only the setting differs

    class Once:
        disabled = False

        def pedantic(self, target, setup=None, rounds=1, warmup_rounds=0, iterations=1):  # noqa: ANN001
            for _ in range(rounds + warmup_rounds):
                if setup:
                    setup()
                target()

    calls = []
    original = quiet.time_split
    quiet.time_split = lambda case: calls.append(case) or original(case)  # type: ignore[method-assign]
    record = quiet.run_baseline(build_cases(config)[1][0], Once())
    assert record.time_split is None and calls == []
    assert set(breakdown_metrics(record).values()) == {None}


def test_the_verifier_continuation_is_its_greedy_output(bench: SuiteBench) -> None:
    """What the vLLM audit appends past an output: the verifier's next greedy tokens, as its own decode has them."""
    from specperf.bench.audit import verifier_continuation

    verifier, prompt = bench.store.verifier.model, bench.store.prompts("0:2").ids[0]
    tokens = decode(verifier, prompt, max_new_tokens=12).tokens
    assert verifier_continuation(verifier, prompt, tokens[:8], 4) == tokens[8:12]
