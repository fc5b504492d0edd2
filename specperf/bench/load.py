"""Drive one load level against a server: closed loop (a fixed number of requests in flight) or open loop (arrivals
at a mean rate, gamma-distributed gaps), the way ``vllm bench serve`` does (``vllm/benchmarks/serve.py``:
``get_request`` for the arrivals, ``--max-concurrency`` as a semaphore around each request).

Warm-up requests run first at the same level and are discarded; the timed requests follow. Every request is one
streamed completion (:func:`specperf.engine.server.client.stream_completion`), so a failed request is a completion
that is not ok, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from specperf.config.schema import rate_label
from specperf.engine.server.client import Completion, stream_completion

log = logging.getLogger(__name__)

MIN_CONNECTIONS = 64  # the client's connection pool never holds fewer


@dataclass(frozen=True)
class LoadLevel:
    """One load level: closed loop (``concurrency`` only) or open loop (``rate``, optionally capped in flight)."""

    concurrency: int | None = None  # closed loop: this many requests in flight at all times
    rate: float | None = None  # open loop: mean arrivals per second (math.inf = all at once); concurrency caps it
    burstiness: float = 1.0  # gamma shape of the inter-arrival gaps (1 = Poisson), as vLLM bench

    def __post_init__(self) -> None:
        if self.concurrency is None and self.rate is None:
            raise ValueError("LoadLevel needs a concurrency (closed loop) or a rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"LoadLevel.concurrency must be at least 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"LoadLevel.rate must be positive (math.inf: all at once), got {self.rate}")
        if not (math.isfinite(self.burstiness) and self.burstiness > 0):
            raise ValueError(f"LoadLevel.burstiness must be a positive finite number, got {self.burstiness}")

    @property
    def label(self) -> str:
        """A stable id: "c4" (closed loop), "r2" / "r0.5" / "rinf" (open loop), "r2c4" (open loop capped at 4).
        Burstiness is a suite-wide setting and not part of it."""
        if self.rate is None:
            return f"c{self.concurrency}"
        cap = f"c{self.concurrency}" if self.concurrency is not None else ""
        return f"r{rate_label(self.rate)}{cap}"


@dataclass(frozen=True)
class LevelRun:
    """The timed requests of one load level."""

    completions: list[Completion]  # in request-index order
    duration_s: float  # first send to last completion end


def arrival_offsets(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Send times of ``n`` open-loop requests, seconds after the first (which is at 0): cumulative gaps drawn from
    Gamma(shape=burstiness, scale=1/(rate * burstiness)) by a numpy Generator seeded with ``seed``, so the mean gap
    is 1/rate (vLLM bench). ``rate`` math.inf: all at 0. The same arguments give the same offsets."""
    if n <= 0:
        return []
    if not rate > 0 or not burstiness > 0:
        raise ValueError(f"arrival_offsets needs rate > 0 and burstiness > 0, got rate={rate}, burstiness={burstiness}")
    if math.isinf(rate):
        return [0.0] * n
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n - 1)
    return [0.0, *(float(offset) for offset in np.cumsum(gaps))]


def run_level(
    url: str,
    model: str,
    prompts: Sequence[list[int]],
    level: LoadLevel,
    *,
    requests: int,
    warmup: int,
    max_tokens: int,
    temperature: float,
    seed: int,
    ignore_eos: bool,
    timeout_s: float,
) -> LevelRun:
    """Run ``warmup`` untimed requests, then ``requests`` timed ones, at ``level`` against the server at ``url``.
    Request i streams ``prompts[i % len(prompts)]`` (token ids) with sampling seed ``seed + i`` when
    ``temperature > 0`` (else no seed); open-loop arrivals are drawn with ``seed``. ``timeout_s`` bounds each
    request. Blocks until done; on KeyboardInterrupt every request in flight is cancelled and the interrupt
    propagates."""
    if not prompts:
        raise ValueError("run_level needs at least one prompt")
    plan = _Plan(url, model, prompts, level, max_tokens, temperature, seed, ignore_eos, timeout_s)
    return asyncio.run(_run_level(plan, requests=requests, warmup=warmup))


@dataclass(frozen=True)
class _Plan:
    """What every request of a level shares."""

    url: str
    model: str
    prompts: Sequence[list[int]]
    level: LoadLevel
    max_tokens: int
    temperature: float
    seed: int
    ignore_eos: bool
    timeout_s: float


async def _run_level(plan: _Plan, *, requests: int, warmup: int) -> LevelRun:
    level = plan.level
    async with _client(level, max(requests, warmup), plan.timeout_s) as client:
        if warmup > 0:
            warm = await _run_requests(client, plan, warmup)
            log.debug("level %s: %d warm-up request(s) done, %d failed", level.label, warmup,
                      sum(not c.timing.ok for c in warm.completions))
        run = await _run_requests(client, plan, requests)
    failed = sum(not c.timing.ok for c in run.completions)
    log.info("level %s: %d request(s) in %.2f s, %d failed", level.label, requests, run.duration_s, failed)
    return run


@contextlib.asynccontextmanager
async def _client(level: LoadLevel, requests: int, timeout_s: float) -> AsyncIterator[httpx.AsyncClient]:
    """One HTTP client for a level, its pool large enough for every request the level can have in flight."""
    in_flight = level.concurrency if level.concurrency is not None else requests
    limits = httpx.Limits(max_connections=max(MIN_CONNECTIONS, in_flight))
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        yield client


async def _run_requests(client: httpx.AsyncClient, plan: _Plan, n: int) -> LevelRun:
    """Requests 0 .. n-1 at the plan's level, all scheduled at once; returns them in index order."""
    level = plan.level
    if level.rate is None:
        offsets = [0.0] * n  # closed loop: everything queued at once behind the semaphore
    else:
        offsets = arrival_offsets(n, level.rate, level.burstiness, plan.seed)
    limit = asyncio.Semaphore(level.concurrency) if level.concurrency is not None else None
    start = time.perf_counter()
    tasks = [asyncio.ensure_future(_one(client, plan, i, start + offsets[i], start, limit)) for i in range(n)]
    try:
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for finished tasks; stops the rest when gather was interrupted
    completions = [completion for completion, _ in results]
    first_send = min((c.timing.sent_s for c in completions), default=0.0)
    last_end = max((end for _, end in results), default=start)
    return LevelRun(completions=completions, duration_s=last_end - (start + first_send))


async def _one(
    client: httpx.AsyncClient, plan: _Plan, index: int, send_at: float, start: float, limit: asyncio.Semaphore | None
) -> tuple[Completion, float]:
    """Request ``index``: wait for its arrival time, then for a free slot, then stream it; returns the completion
    and the perf_counter time it ended."""
    delay = send_at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    async with limit if limit is not None else contextlib.nullcontext():
        completion = await stream_completion(
            client, plan.url, plan.model, plan.prompts[index % len(plan.prompts)], index=index,
            max_tokens=plan.max_tokens, temperature=plan.temperature,
            seed=plan.seed + index if plan.temperature > 0 else None, ignore_eos=plan.ignore_eos,
            level_start=start, timeout_s=plan.timeout_s,
        )
    end = time.perf_counter()
    _log_request(completion)
    return completion, end


def _log_request(completion: Completion) -> None:
    """One DEBUG line per request."""
    timing = completion.timing
    if not timing.ok:
        log.debug("%s", timing.error)
        return
    log.debug("request %d: %d tokens in %d chunks, sent at %.3f s, TTFT %.3f s, latency %.3f s", timing.index,
              timing.output_tokens, len(timing.chunk_tokens), timing.sent_s, timing.ttft_s, timing.latency_s)
