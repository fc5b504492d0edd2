"""The cases of ``engine: server`` drafts (serving mode): the servers each needs, started or attached to, and one
load level measured on the speculative server and on its twin without speculation, round by round.

A round is one load run of ``serving.requests`` requests at the case's level. Each round runs the twin first (in
pytest-benchmark's untimed setup), then the speculative server (the timed target), so drift hits both alike. Warm-up
requests precede each side's timed requests, outside the timed target and outside the ``/metrics`` window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specperf.analysis.serving import LevelMetrics, Slo, level_metrics, speedups
from specperf.bench.load import LevelRun, LoadLevel, run_level
from specperf.bench.vllm_cases import StagedModels
from specperf.config import SuiteConfig
from specperf.config.cases import Case
from specperf.config.schema import VLLM_INSTALL
from specperf.engine.server.client import Completion, ServerNotReady, get_metrics_text, list_models, wait_healthy
from specperf.engine.server.launch import (
    ServerCommand,
    ServerError,
    ServerProcess,
    current_python,
    free_port,
    start_server,
    vllm_command,
)
from specperf.engine.server.metrics_text import Acceptance, SpecCounters, acceptance_between, read_counters
from specperf.engine.vllm_engine import (
    BIND_ENV,
    VllmEngines,
    counted_result,
    cpu_binding,
    engine_args,
    speculative_config,
)
from specperf.records import DecodeResult

log = logging.getLogger(__name__)

SERVED_NAME = "specperf"  # the model name of servers specperf starts
# LLM(...) keywords that are not `vllm serve` flags, or that the server sets otherwise.
NOT_SERVER_FLAGS = ("model", "dtype", "seed", "disable_log_stats")


class RequestFailed(ServerError):
    """A request of a load run failed: the case fails, naming it; the other cases go on."""


@dataclass(frozen=True)
class Endpoint:
    """Where one side of a server case is served."""

    url: str
    model: str
    label: str


def parse_load(label: str, burstiness: float) -> LoadLevel:
    """A case's load label ('c4', 'r2', 'rinf') as a :class:`LoadLevel`."""
    if label.startswith("c"):
        return LoadLevel(concurrency=int(label[1:]))
    return LoadLevel(rate=math.inf if label == "rinf" else float(label[1:]), burstiness=burstiness)


@dataclass(frozen=True)
class ServedRuns:
    """What one server case measured: each round's requests on both sides (as decode results), both sides'
    serving metrics, and the speculative server's /metrics acceptance over its timed requests (None where the
    server exposes none, with the reason in ``metrics_note``)."""

    rounds: list[list[DecodeResult]]
    baseline_rounds: list[list[DecodeResult]]
    acceptance: Acceptance | None
    metrics_note: str | None
    timed: bool
    spec_metrics: LevelMetrics | None
    twin_metrics: LevelMetrics | None


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _models(url: str, timeout_s: float) -> list[str]:
    import httpx

    async with httpx.AsyncClient(timeout=timeout_s) as client:
        return await list_models(client, url)


async def _metrics(url: str) -> str | None:
    import httpx

    async with httpx.AsyncClient(timeout=30.0) as client:
        return await get_metrics_text(client, url)


class ServingCases:
    """Servers of the session's server cases: started on first use (or attached to), stopped by :meth:`close`.

    At most one speculative server is alive at a time (server cases run grouped by draft and k); the twin of each
    distinct set of engine arguments is started once and shared by every draft that has those arguments.
    """

    def __init__(self, config: SuiteConfig, device: str, tokenize: Callable[[str], list[int]]) -> None:
        self.config, self.serving, self.device = config, config.serving, device
        self.tokenize = tokenize
        self.staged = StagedModels()
        # gpu_memory_utilization when the suite leaves it unset, as for vLLM engines: two live at once (the
        # speculative server and its twin), on CUDA sized from the free memory once per session.
        self._memory = VllmEngines(device=device, threads=config.threads)
        self._log_dir: Path | None = None  # the started servers' logs; kept when a server failed
        self._server_failed = False
        self._spec: tuple[tuple[Any, ...], ServerProcess] | None = None
        self._twins: dict[tuple[Any, ...], ServerProcess] = {}
        self._ports = iter(range(self.serving.port, self.serving.port + 10_000)) if self.serving.port else None
        self._attached_endpoints: tuple[Endpoint, Endpoint] | None = None

    # --- servers -----------------------------------------------------------------------------------------------
    def log_dir(self) -> Path:
        """Where started servers write their logs: a temporary folder, made by the first start."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="specperf-servers-"))
        return self._log_dir

    def endpoints(self, case: Case) -> tuple[Endpoint, Endpoint]:
        """(speculative, twin) endpoints of ``case``, starting the servers it needs."""
        if self.serving.attached:
            return self._attached()
        assert case.draft is not None
        if importlib.util.find_spec("vllm") is None:
            raise ServerError(f"{case.id}: serving mode starts vLLM's server, which is not installed in this "
                              f"environment. Fix: {VLLM_INSTALL}; or attach to running servers with serving.url "
                              "and serving.baseline_url")
        args = self._engine_args(case)
        spec_key = (args, case.draft.name, case.k)
        starting: list[ServerProcess] = []
        if self._spec is None or self._spec[0] != spec_key:
            if self._spec is not None:
                self._spec[1].stop()
                self._spec = None
            server = start_server(self._command(f"{case.draft.name} k={case.k}", args, self._speculative(case)),
                                  self.log_dir())
            self._spec = (spec_key, server)
            starting.append(server)
        if args not in self._twins:
            twin = start_server(self._command("verifier-only twin", args, None), self.log_dir())
            self._twins[args] = twin
            starting.append(twin)
        for server in starting:
            self._wait(server)
        spec, twin = self._spec[1], self._twins[args]
        return (Endpoint(spec.url, SERVED_NAME, spec.command.label),
                Endpoint(twin.url, SERVED_NAME, twin.command.label))

    def _engine_args(self, case: Case) -> tuple[tuple[str, Any], ...]:
        assert case.draft is not None
        config = self.config
        largest = max(self.serving.concurrency, default=1)
        return engine_args(config.vllm_for(case.draft), device=self.device, dtype=config.dtype,
                           seed=config.generation.seed, max_batch=max(largest, 16),
                           verifier_dir=self.staged.location(config.verifier),
                           trust_remote_code=config.trust_remote_code, memory_default=self._memory.memory_default)

    def _speculative(self, case: Case) -> dict[str, Any]:
        assert case.draft is not None
        model = case.draft.model
        return speculative_config(case.draft, self.config.vllm_for(case.draft), case.k,
                                  self.staged.location(model) if model else None)

    def _port(self) -> int:
        if self._ports is None:
            return free_port(self.serving.host)
        return next(self._ports)

    def _command(self, label: str, args: tuple[tuple[str, Any], ...], speculative: dict[str, Any] | None
                 ) -> ServerCommand:
        kwargs = dict(args)
        flags = {key: value for key, value in kwargs.items() if key not in NOT_SERVER_FLAGS}
        return vllm_command(label=label, python=current_python(), model_dir=kwargs["model"], dtype=kwargs["dtype"],
                            host=self.serving.host, port=self._port(), model_name=SERVED_NAME,
                            seed=kwargs["seed"], engine_args=flags, speculative=speculative,
                            extra_args=self.serving.server_args, env=self._environment(kwargs))

    def _environment(self, kwargs: dict[str, Any]) -> list[tuple[str, str]]:
        """The server's extra variables: the suite's, and on a CPU the OpenMP binding of its engine's threads."""
        import os

        env = dict(self.serving.env)
        if not self.device.startswith("cuda") and BIND_ENV not in env and BIND_ENV not in os.environ:
            world = kwargs.get("tensor_parallel_size", 1) * kwargs.get("pipeline_parallel_size", 1)
            env[BIND_ENV] = cpu_binding(world, self.config.threads, sorted(os.sched_getaffinity(0)))
        return sorted(env.items())

    def _wait(self, server: ServerProcess) -> None:
        timeout = self.serving.startup_timeout_s
        try:
            _run(wait_healthy(server.url, timeout, server.alive))
        except ServerNotReady as exc:
            self._server_failed = True
            error = server.failure(f"the server did not become healthy ({exc})")
            server.stop()
            if self._spec is not None and self._spec[1] is server:
                self._spec = None
            self._twins = {k: v for k, v in self._twins.items() if v is not server}
            raise error from None
        log.info("%s: ready at %s after %.1f s", server.command.label, server.url,
                 time.perf_counter() - server.started_at)

    def _attached(self) -> tuple[Endpoint, Endpoint]:
        """The running servers of serving.url and serving.baseline_url, their model names read once."""
        if self._attached_endpoints is None:
            serving = self.serving
            assert serving.url is not None and serving.baseline_url is not None
            spec = Endpoint(serving.url, "", "the speculative server")
            twin = Endpoint(serving.baseline_url, "", "the twin server (baseline_url)")
            self._attached_endpoints = (dataclasses.replace(spec, model=self._served_model(spec)),
                                        dataclasses.replace(twin, model=self._served_model(twin)))
        return self._attached_endpoints

    def _served_model(self, endpoint: Endpoint) -> str:
        try:
            models = _run(_models(endpoint.url, 30.0))
        except Exception as exc:  # httpx raises many kinds; the message must say which URL failed
            raise ServerError(f"{endpoint.label} at {endpoint.url} is unreachable ({type(exc).__name__}: {exc}); "
                              "fix: start it, or correct serving.url / serving.baseline_url") from None
        wanted = self.serving.model_name
        if wanted is None:
            if len(models) != 1:
                raise ServerError(f"{endpoint.label} at {endpoint.url} serves {len(models)} models "
                                  f"({', '.join(models) or 'none'}); fix: set serving.model_name to one of them")
            return str(models[0])
        if wanted not in models:
            raise ServerError(f"{endpoint.label} at {endpoint.url} serves {', '.join(models) or 'no model'}, not "
                              f"{wanted!r}; fix: set serving.model_name to the served name (--served-model-name)")
        return wanted

    # --- measuring ---------------------------------------------------------------------------------------------
    def counters(self, endpoint: Endpoint) -> tuple[SpecCounters | None, str | None]:
        """The speculative server's counters now, or (None, why not)."""
        text = _run(_metrics(endpoint.url))
        if text is None:
            return None, f"{endpoint.url}/metrics is missing: acceptance from the server's counters is null"
        counters = read_counters(text, self.serving.kind, endpoint.model or None)
        if counters.draft_tokens is None and counters.accept_rate_gauge is None:
            return None, f"{endpoint.url}/metrics has no speculative-decoding counters of kind {self.serving.kind}"
        return counters, None

    def level(self, endpoint: Endpoint, case: Case, prompts: list[list[int]], *, warmup: bool) -> LevelRun:
        """One load run at the case's level: the warm-up requests (``warmup``) or the timed ones."""
        serving, gen = self.serving, self.config.generation
        count = serving.warmup_requests if warmup else serving.requests
        run = run_level(endpoint.url, endpoint.model, prompts, parse_load(case.load, serving.burstiness),
                        requests=count, warmup=0, max_tokens=gen.max_new_tokens, temperature=gen.temperature,
                        seed=serving.seed if warmup else serving.seed + 1, ignore_eos=not gen.stop_at_eos,
                        timeout_s=serving.request_timeout_s)
        failed = [c for c in run.completions if not c.timing.ok]
        if failed:
            self._server_failed = True
            first = failed[0].timing
            raise RequestFailed(f"{case.id}: {len(failed)} of {len(run.completions)} request(s) to {endpoint.label} "
                                f"({endpoint.url}) failed; first: {first.error}")
        return run

    def results(self, run: LevelRun, case: Case, prompts: list[list[int]], *, speculative: bool
                ) -> list[DecodeResult]:
        """Each completion of a run as a :class:`DecodeResult`, in request order."""
        return [self._result(c, prompts[i % len(prompts)], case.k if speculative else 0)
                for i, c in enumerate(run.completions)]

    def _result(self, completion: Completion, prompt: list[int], k: int) -> DecodeResult:
        timing = completion.timing
        tokens = list(completion.token_ids) if completion.token_ids is not None else self.tokenize(completion.text)
        stop = "eos" if completion.finish_reason == "stop" else "length"
        wall, ttft = timing.latency_s or 0.0, timing.ttft_s or 0.0
        spec = completion.spec if k else None
        if not spec or spec.get("per_step_accepted") is None:
            result = counted_result(tokens, prompt_len=len(prompt), k=0, wall_s=wall, ttft_s=ttft, stop=stop,
                                    backend="server")
            if k:  # a speculative request whose server gave no per-request counters: unknown, never zero
                result.k, result.verifier_calls = k, 0
            return result
        return counted_result(tokens, prompt_len=len(prompt), k=k, wall_s=wall, ttft_s=ttft, stop=stop,
                              accepted_steps=list(spec["per_step_accepted"]),
                              drafted_steps=list(spec["per_step_drafted"]),
                              histogram=list(spec.get("acceptance_histogram") or []) or None,
                              draft_tokens=spec.get("num_draft_tokens"), backend="server")

    def pass_fn(self, case: Case, prompts: list[list[int]], *, speculative: bool) -> Callable[[], list[DecodeResult]]:
        """One load run at the case's level on its speculative server or its twin, as a pass of decode results
        (the in-session A/B's rounds); the servers start here, before any timed round."""
        spec, twin = self.endpoints(case)
        endpoint = spec if speculative else twin
        return lambda: self.results(self.level(endpoint, case, prompts, warmup=False), case, prompts,
                                    speculative=speculative)

    def measure(self, case: Case, prompts: list[list[int]], benchmark: Any) -> ServedRuns:
        """The case's rounds through pytest-benchmark: twin (untimed setup), then speculative (timed). Both sides
        warm up first; the speculative server's /metrics are read before its first timed run and after its last,
        and nothing else reaches it in between."""
        spec, twin = self.endpoints(case)
        spec_runs: list[LevelRun] = []
        twin_runs: list[LevelRun] = []
        self.level(twin, case, prompts, warmup=True)
        self.level(spec, case, prompts, warmup=True)
        before, note = self.counters(spec)

        def setup() -> None:
            twin_runs.append(self.level(twin, case, prompts, warmup=False))

        def target() -> None:
            spec_runs.append(self.level(spec, case, prompts, warmup=False))

        benchmark.pedantic(target, setup=setup, rounds=self.serving.rounds, warmup_rounds=0, iterations=1)
        after, _ = self.counters(spec) if before is not None else (None, None)
        slo = Slo(**dataclasses.asdict(self.serving.slo))
        return ServedRuns(
            rounds=[self.results(r, case, prompts, speculative=True) for r in spec_runs],
            baseline_rounds=[self.results(r, case, prompts, speculative=False) for r in twin_runs],
            acceptance=None if before is None or after is None else acceptance_between(before, after),
            metrics_note=note, timed=not benchmark.disabled,
            spec_metrics=_pooled_metrics(spec_runs, slo), twin_metrics=_pooled_metrics(twin_runs, slo),
        )

    def close(self) -> None:
        """Stop every server this session started, and remove the staged model folders."""
        if self._spec is not None:
            self._spec[1].stop()
            self._spec = None
        for twin in self._twins.values():
            twin.stop()
        self._twins.clear()
        self.staged.cleanup()
        if self._log_dir is not None and not self._server_failed:  # a failed server's log stays for its reader
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None


def served_figures(case: Case, served: ServedRuns) -> dict[str, object]:
    """The serving keys of a server case's extra_info: its load, both sides' metrics (the twin's prefixed
    ``twin_``), the speedups at this load, and the speculative server's /metrics acceptance (null, with a note,
    where it has none)."""
    level = parse_load(case.load, 1.0)
    out: dict[str, object] = {"load": case.load, "concurrency": level.concurrency,
                              "request_rate": None if level.rate is None or math.isinf(level.rate) else level.rate}
    spec, twin = served.spec_metrics, served.twin_metrics
    assert spec is not None and twin is not None
    out.update(spec)
    out.update({f"twin_{key}": value for key, value in twin.items()})
    out.update(speedups(spec, twin))
    acceptance = served.acceptance
    out.update({
        "server_acceptance_rate": None if acceptance is None else acceptance.acceptance_rate,
        "server_mean_acceptance_length": None if acceptance is None else acceptance.mean_acceptance_length,
        "server_position_acceptance": None if acceptance is None else list(acceptance.per_position),
        "server_draft_tokens": None if acceptance is None else acceptance.draft_tokens,
        "server_accepted_tokens": None if acceptance is None else acceptance.accepted_tokens,
        "server_metrics_note": served.metrics_note,
    })
    return out


def _pooled_metrics(runs: list[LevelRun], slo: Slo) -> LevelMetrics | None:
    """The serving metrics over every timed run of one side (requests pooled, durations summed)."""
    if not runs:
        return None
    timings = [c.timing for run in runs for c in run.completions]
    return level_metrics(timings, sum(run.duration_s for run in runs), slo)
