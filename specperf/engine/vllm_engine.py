"""vLLM as an engine: ``vllm.LLM`` built from a suite's ``vllm:`` arguments, requests decoded through it, and each
request's acceptance read from vLLM's own per-request counters.

vLLM's definitions: acceptance rate = accepted / draft tokens; mean acceptance length = 1 + accepted / drafts;
per-position acceptance = accepted at position i / drafts. specperf asks vLLM for its per-request speculative metrics
(``per_request_spec_decode_metrics="detailed"``: the accepted and drafted count of every verify step of the
request), so every request has its own figures, at any batch size.

vLLM is imported only here, and only when a suite has an ``engine: vllm`` draft.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from specperf.config.schema import VLLM_INSTALL, DraftSpec, VllmSpec
from specperf.errors import SpecperfError
from specperf.records import DecodeResult

log = logging.getLogger(__name__)

# specperf's drafters and the vLLM speculative methods that run them.
METHODS = {"model": "draft_model", "prompt-lookup": "ngram"}
GIB = 1024**3
# Engines alive at once: the verifier-only baseline and one speculative engine (VllmEngines keeps one of each kind).
LIVE_ENGINES = 2
# gpu_memory_utilization on a CPU when the suite leaves it unset: a share of the NUMA node, two engines at once.
CPU_MEMORY_DEFAULT = 0.15
# On CUDA the default is sized from the free memory (default_memory_utilization); left out of the engines' shares:
PROCESS_HEADROOM_PERCENT = 10  # of the free memory, for this process's later growth (the audit's models, activations)
ENGINE_OVERHEAD = GIB  # bytes per engine process outside its share: its CUDA context, created before vLLM measures
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
# vLLM's engine process can fail to come up for a moment after another engine's processes exit (seen once on this
# CPU, right after another engine exited); a second start is tried for that message only.
CORE_START_FAILED = "Engine core initialization failed"
START_ATTEMPTS = 2


class VllmEngineError(SpecperfError):
    """vLLM could not build or run an engine for a case."""


class EngineOutOfMemory(VllmEngineError):
    """The device has too little free memory for a vLLM engine's share; the case fails as out of memory."""


class EngineNotShutDown(VllmEngineError):
    """An earlier engine failed to shut down, so no other engine is started: its memory may still be held."""


@dataclass(frozen=True)
class EngineKey:
    """One distinct engine: the verifier, ``LLM(...)`` keyword arguments, and the speculative config (None for the
    verifier-only baseline). Engines are shared by every case with the same key."""

    args: tuple[tuple[str, Any], ...]
    speculative: tuple[tuple[str, Any], ...] | None = None

    @property
    def base(self) -> EngineKey:
        return EngineKey(self.args)

    def kwargs(self) -> dict[str, Any]:
        out = dict(self.args)
        if self.speculative is not None:
            out["speculative_config"] = dict(self.speculative)
            out["per_request_spec_decode_metrics"] = "detailed"
        return out


def vllm_methods() -> tuple[str, ...]:
    """The speculative methods this vLLM knows (its ``SpeculativeMethod`` literal, flattened)."""
    from vllm.config.speculative import SpeculativeMethod

    def flatten(tp: Any) -> list[str]:
        return [m for arg in typing.get_args(tp) for m in ([arg] if isinstance(arg, str) else flatten(arg))]

    return tuple(flatten(SpeculativeMethod))


def speculative_config(draft: DraftSpec, spec: VllmSpec, k: int, model_dir: str | None) -> dict[str, Any]:
    """The ``speculative_config`` of a draft at block size k: its drafter's method, then the suite's extras."""
    config: dict[str, Any] = {"method": METHODS[draft.drafter], "num_speculative_tokens": k}
    if draft.drafter == "prompt-lookup":
        config.update(prompt_lookup_min=draft.min_ngram, prompt_lookup_max=draft.max_ngram)
    elif model_dir is not None:
        config["model"] = model_dir
    config.update(dict(spec.speculative_config))
    return config


def audited_method(config: dict[str, Any]) -> bool:
    """Whether the audit can replay this method with transformers: draft models and n-gram lookup, not heads
    (EAGLE, Medusa, MTP) that only vLLM can run."""
    return config.get("method") in METHODS.values()


def cpu_binding(world: int, threads: int | None, cpus: Sequence[int]) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for ``world`` worker processes on the CPUs this process may use: each worker gets
    ``threads`` cores (default: an even share), e.g. '0|1' for tensor_parallel_size 2 on 2 cores."""
    per = threads or max(1, len(cpus) // world)
    if world * per > len(cpus):
        raise VllmEngineError(
            f"{world} vLLM worker(s) x {per} thread(s) need {world * per} CPU cores; this process may use "
            f"{len(cpus)} ({', '.join(map(str, cpus))}). Fix: lower tensor_parallel_size x pipeline_parallel_size "
            "or threads")
    return "|".join(",".join(str(c) for c in cpus[i * per:(i + 1) * per]) for i in range(world))


def engine_args(spec: VllmSpec, *, device: str, dtype: str, seed: int, max_batch: int, verifier_dir: str,
                trust_remote_code: bool, memory_default: Callable[[], float]) -> tuple[tuple[str, Any], ...]:
    """``LLM(...)`` keyword arguments (speculative config aside): the suite's, then specperf's defaults.

    ``memory_default`` gives ``gpu_memory_utilization`` when the suite leaves it unset (called only then: on CUDA it
    measures the device). ``enforce_eager`` defaults to true on every device: on CUDA, each of a suite's engine
    starts would otherwise compile the model and capture CUDA graphs, and starts would dominate the run's time.
    ``enable_prefix_caching`` defaults to false.
    """
    args: dict[str, Any] = {
        "model": verifier_dir, "dtype": dtype, "seed": seed, "disable_log_stats": False,
        "trust_remote_code": trust_remote_code,
        "gpu_memory_utilization": spec.gpu_memory_utilization or memory_default(),
        "max_num_seqs": spec.max_num_seqs or max_batch,
        "enforce_eager": True if spec.enforce_eager is None else spec.enforce_eager,
        # Off unless asked: every timed round decodes the same prompts, which a prefix cache would serve from the
        # warm-up's KV, skipping the prefill that specperf's engine (and a first request) pays.
        "enable_prefix_caching": bool(spec.enable_prefix_caching),
    }
    for key in ("tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend", "max_model_len"):
        if getattr(spec, key) is not None:
            args[key] = getattr(spec, key)
    return tuple(sorted(args.items()))


def default_memory_utilization(free: int, total: int, engines: int = LIVE_ENGINES) -> float:
    """gpu_memory_utilization for each of ``engines`` engines started one after another on a device with ``free``
    of ``total`` bytes free now, rounded down to 0.01.

    vLLM's share is of the device's total memory: at start an engine reserves ceil(total x share) and refuses to
    start if less is free. So the engines' shares together may take the free memory, less
    PROCESS_HEADROOM_PERCENT of it for this process's later growth and ENGINE_OVERHEAD per engine (its CUDA
    context, outside its share).
    """
    usable = free - free * PROCESS_HEADROOM_PERCENT // 100 - engines * ENGINE_OVERHEAD
    percent = max(0, usable) * 100 // (engines * total)
    if percent < 1:
        raise EngineOutOfMemory(
            f"{free / GIB:.2f} of {total / GIB:.2f} GiB of device memory is free: too little for {engines} vLLM "
            f"engines ({ENGINE_OVERHEAD / GIB:.0f} GiB each outside their share, {PROCESS_HEADROOM_PERCENT}% of "
            "the free memory left to this process). Fix: free the device (other processes, smaller or fewer "
            "models in this suite), or set vllm.gpu_memory_utilization yourself")
    return percent / 100


def check_start_memory(free: int, total: int, share: float, label: str) -> None:
    """vLLM's own check at engine start, made here first so the refusal names the case and says what was free:
    an engine at ``share`` reserves ceil(total x share) bytes and needs that much free."""
    needed = math.ceil(total * share)
    if free < needed:
        raise EngineOutOfMemory(
            f"{label}: a vLLM engine at gpu_memory_utilization {share} reserves {needed / GIB:.2f} GiB ({share} x "
            f"{total / GIB:.2f} GiB, the device's total), and only {free / GIB:.2f} GiB is free. Fix: leave "
            "vllm.gpu_memory_utilization unset (specperf sizes it from the free memory) or lower it, or free the "
            "device")


def free_device_memory(device: str) -> tuple[int, int] | None:
    """Collect this process's garbage and give its allocator's cached blocks back to the device, so an engine
    (another process) can have them; then the device's (free, total) bytes. None on a CPU."""
    gc.collect()
    if not device.startswith("cuda"):
        return None
    import torch

    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return free, total


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables while an engine starts (its processes inherit them), then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class VllmEngines:
    """The session's vLLM engines: one per distinct :class:`EngineKey`, created on first use.

    At most one verifier-only engine and one speculative engine are alive at once (the cases of one configuration
    run together, :func:`specperf.config.cases.build_cases`); starting another shuts the previous one of its kind
    down. :meth:`close` shuts every engine down, and the plugin calls it at session end. Before each start this
    process's cached device memory is given back; once an engine fails to shut down, no other one is started.
    """

    def __init__(self, *, device: str, threads: int | None) -> None:
        self.device = device
        self.threads = threads
        self._live: dict[EngineKey, tuple[Any, str]] = {}  # key -> (engine, the label it was started for)
        self._memory_default: float | None = None
        self._not_shut_down: str | None = None  # the engine that failed to shut down, and why

    def memory_default(self) -> float:
        """gpu_memory_utilization for engines whose suite leaves it unset: CPU_MEMORY_DEFAULT on a CPU; on CUDA
        sized from the free memory at the first call, before any engine runs, and kept for the session (a share
        measured later would change the engine keys)."""
        if self._memory_default is None:
            memory = free_device_memory(self.device)
            self._memory_default = CPU_MEMORY_DEFAULT if memory is None else default_memory_utilization(*memory)
            if memory is not None:
                log.info("vLLM engines get gpu_memory_utilization %s each: %.2f of %.2f GiB free, %d engines",
                         self._memory_default, memory[0] / GIB, memory[1] / GIB, LIVE_ENGINES)
        return self._memory_default

    def get(self, key: EngineKey, label: str) -> Any:
        if key not in self._live:
            speculative = key.speculative is not None
            for other in [k for k in self._live if (k.speculative is not None) == speculative]:
                self._shutdown(other)
            self._live[key] = (self._create(key, label), label)
        return self._live[key][0]

    def _create(self, key: EngineKey, label: str) -> Any:
        if self._not_shut_down is not None:
            raise EngineNotShutDown(
                f"{label}: specperf starts no more vLLM engines: {self._not_shut_down}, and its processes may still "
                "hold the memory this engine needs. Fix: stop what is left of it (nvidia-smi or ps list them; "
                "vLLM's are named VLLM::EngineCore), then rerun these cases; the log above has the shutdown error")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise VllmEngineError(f"{label}: engine vllm needs vLLM, which is not importable ({exc}). Fix: "
                                  f"{VLLM_INSTALL}") from None
        kwargs = key.kwargs()
        env = self._start_environment(kwargs, label)
        memory, share = free_device_memory(self.device), kwargs.get("gpu_memory_utilization")
        if memory is not None and share is not None:
            check_start_memory(*memory, share, label)
        log.info("%s: starting a vLLM engine (%s)", label, ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items())))
        started = time.perf_counter()
        for attempt in range(START_ATTEMPTS):
            try:
                with _environment(env):
                    llm = LLM(**kwargs)
                break
            except Exception as exc:  # vLLM raises many kinds; the case must name which engine failed and why
                if attempt + 1 < START_ATTEMPTS and CORE_START_FAILED in str(exc):
                    log.warning("%s: vLLM's engine process failed to start (%s); trying once more", label,
                                summary(exc))
                    continue
                raise VllmEngineError(f"{label}: vLLM could not start an engine with {kwargs}: "
                                      f"{type(exc).__name__}: {summary(exc)} (vLLM's log above has the cause)"
                                      ) from exc
        log.info("%s: vLLM engine ready in %.1f s", label, time.perf_counter() - started)
        return llm

    def _start_environment(self, kwargs: dict[str, Any], label: str) -> dict[str, str]:
        """The variables an engine's processes start with: the CPU binding, unless the user set one."""
        if self.device.startswith("cuda") or BIND_ENV in os.environ:
            return {}
        world = kwargs.get("tensor_parallel_size", 1) * kwargs.get("pipeline_parallel_size", 1)
        try:
            return {BIND_ENV: cpu_binding(world, self.threads, sorted(os.sched_getaffinity(0)))}
        except VllmEngineError as exc:
            raise VllmEngineError(f"{label}: {exc}") from None

    def _shutdown(self, key: EngineKey) -> None:
        """Stop an engine's processes. vLLM's shutdown runs once and stops processes that already exited quietly
        (v1/engine/core_client.py MPClient.shutdown, v1/utils.py shutdown), so an exception here means processes
        may be left holding memory: it is logged, and later starts are refused."""
        llm, label = self._live.pop(key)
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as exc:
            log.error("%s: the vLLM engine failed to shut down: %s: %s", label, type(exc).__name__, summary(exc),
                      exc_info=exc)
            self._not_shut_down = (f"the engine of {label} failed to shut down ({type(exc).__name__}: "
                                   f"{summary(exc, 300)})")
        del llm

    def close(self) -> None:
        for key in list(self._live):
            self._shutdown(key)


def summary(exc: BaseException, limit: int = 600) -> str:
    """An exception's message on one line, cut to ``limit`` characters (vLLM's can run to pages)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _positions(per_step: Sequence[int], k: int) -> list[int]:
    """[i] = steps whose count exceeds i: steps with a draft token at position i (or with it accepted)."""
    return [sum(n > i for n in per_step) for i in range(k)]


def result_from_output(output: Any, *, prompt_len: int, k: int, wall_s: float) -> DecodeResult:
    """A :class:`DecodeResult` from a vLLM ``RequestOutput``: tokens, timing and vLLM's per-request counters."""
    completion = output.outputs[0]
    tokens = list(completion.token_ids)
    metrics = getattr(output, "metrics", None)
    ttft = getattr(metrics, "first_token_latency", None) or wall_s
    stop = "eos" if completion.finish_reason == "stop" else "length"
    spec = completion.spec_decode_metrics
    if spec is None:
        return counted_result(tokens, prompt_len=prompt_len, k=0, wall_s=wall_s, ttft_s=ttft, stop=stop)
    return counted_result(tokens, prompt_len=prompt_len, k=k, wall_s=wall_s, ttft_s=ttft, stop=stop,
                          accepted_steps=list(spec.per_step_accepted), drafted_steps=list(spec.per_step_drafted),
                          histogram=list(spec.histogram), draft_tokens=int(spec.num_draft_tokens))


def counted_result(tokens: list[int], *, prompt_len: int, k: int, wall_s: float, ttft_s: float, stop: str,
                   accepted_steps: list[int] | None = None, drafted_steps: list[int] | None = None,
                   histogram: list[int] | None = None, draft_tokens: int | None = None,
                   backend: str = "vllm") -> DecodeResult:
    """A :class:`DecodeResult` from vLLM's per-request speculative counters (its offline ``RequestOutput`` or its
    server's ``metrics.speculative_decoding``): the accepted and drafted count of every verify step.

    Without ``accepted_steps`` the request is verifier-only: one forward per token. Verifier calls = the prefill,
    every verify step, and any step without a draft (each of those emits 1 token). vLLM drafts k tokens even at
    the last step and drops what passes max_tokens, so its counters may count accepted tokens beyond the output;
    the audit recomputes them the same way.
    """
    if accepted_steps is None or drafted_steps is None:
        return DecodeResult(tokens, 0, prompt_len, len(tokens), 0, None, None, None, None, None, None, None,
                            wall_s, ttft_s, stop, backend)
    plain_steps = max(0, len(tokens) - 1 - sum(a + 1 for a in accepted_steps))
    return DecodeResult(
        tokens=tokens, k=k, prompt_len=prompt_len, verifier_calls=1 + len(accepted_steps) + plain_steps,
        draft_calls=None, verifier_tokens=None, draft_tokens=None,
        proposed=sum(drafted_steps) if draft_tokens is None else draft_tokens, accepted=sum(accepted_steps),
        accept_counts=histogram, position_proposed=_positions(drafted_steps, k),
        position_accepted=_positions(accepted_steps, k), wall_s=wall_s, ttft_s=ttft_s, stop_reason=stop,
        backend=backend,
    )


def vllm_generate(llm: Any, prompts: list[list[int]], *, k: int, max_new_tokens: int, temperature: float,
                  seed: int, stop_at_eos: bool) -> list[DecodeResult]:
    """Submit ``prompts`` together (one batch) and wait for all; each request's wall is the batch's."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [SamplingParams(temperature=temperature, max_tokens=max_new_tokens, min_tokens=0,
                             ignore_eos=not stop_at_eos, seed=seed + i if temperature > 0 else None,
                             detokenize=False) for i in range(len(prompts))]
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    started = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    wall = time.perf_counter() - started
    return [result_from_output(o, prompt_len=len(p), k=k, wall_s=wall) for o, p in zip(outputs, prompts)]
