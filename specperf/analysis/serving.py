"""Serving metrics of one load level: per-request timings of a streamed load run -> TTFT, TPOT, ITL, E2EL, goodput.

The definitions are those of vLLM's ``vllm bench serve`` (``vllm/benchmarks/serve.py``, ``calculate_metrics``; the
timings as ``benchmarks/lib/endpoint_request_func.py`` takes them), with one deliberate difference:

- Only completed (``ok``) requests enter any figure; failed ones are counted in ``failed`` and nowhere else.
- TTFT: send -> first output-carrying chunk. E2EL: send -> last chunk.
- TPOT of one request: ``(E2EL - TTFT) / (output_tokens - 1)``, for requests with ``output_tokens > 1`` only.
- Goodput: completed requests meeting every SLO that is set, each with ``value <= slo`` (vLLM: ``slo >= value``),
  over the level's duration; a request with ``output_tokens <= 1`` has TPOT 0 for this test (vLLM's rule).
- Throughputs: output tokens of completed requests / duration, completed requests / duration.
- Percentiles pool every request's values (ITL: every gap of every request), computed by
  :func:`specperf.analysis.stats.percentile` (numpy's linear method, as vLLM uses) so that all of specperf's
  p50/p95 agree; means are ``math.fsum`` means. A distribution with no values is None.

**ITL is per token, not per chunk (unlike vLLM).** vLLM's ITL list holds one gap per streamed chunk. Under
speculation a chunk carries every token accepted in one step, so a chunk of n tokens is one long gap followed by
n - 1 gaps of zero that no one measures: chunk-level ITL then disagrees with TPOT and with output throughput, by
the mean accepted length. Here a chunk carrying n tokens that arrives g seconds after the previous chunk counts as n
arrivals spaced g/n apart (n gaps of g/n each), the fix SGLang made in sgl-project/sglang PR 12064 (see also vLLM
issue 28183). The first chunk's extra tokens (``chunk_tokens[0] - 1``) arrive with the first token and add no gaps.
So mean ITL equals TPOT when the first chunk carries one token and the chunk counts add up to ``output_tokens``.
vLLM's own chunk-level ITL is kept as ``chunk_itl_ms_*`` so that both are visible.

Token counts come from two places: ``output_tokens`` (the server's usage, authoritative) drives TPOT, throughput
and goodput; ``chunk_tokens`` (what each chunk carried) drives per-token ITL and ``tokens_per_chunk_mean``. The two
may disagree (``sum(chunk_tokens) != output_tokens`` is accepted), e.g. when a client counts tokens per chunk
approximately; each figure then follows its own source.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

from specperf.analysis.stats import percentile

MS_PER_S = 1000.0
Axis = Literal["concurrency", "request_rate"]
AXES: tuple[Axis, ...] = ("concurrency", "request_rate")


@dataclass(frozen=True)
class RequestTiming:
    """One streamed request, times in seconds on one monotonic clock."""

    index: int  # request index within the load level
    ok: bool  # completed: at least one output-carrying chunk arrived and the stream ended without error
    error: str | None  # why it failed (None when ok)
    sent_s: float  # when the request was sent, relative to the level's start
    ttft_s: float | None  # send -> first chunk carrying output (vLLM: first non-empty chunk)
    latency_s: float | None  # send -> last chunk (E2EL)
    chunk_gaps_s: tuple[float, ...]  # gaps between successive output-carrying chunks (vLLM's `itl`: chunk level)
    chunk_tokens: tuple[int, ...]  # output tokens of each chunk, the first included (len = len(chunk_gaps_s) + 1)
    output_tokens: int  # completion tokens (from the server's usage when given)
    prompt_tokens: int  # prompt tokens (from the server's usage when given)


@dataclass(frozen=True)
class Slo:
    """Service-level objectives of goodput, milliseconds; a request is good when it meets every one that is set."""

    ttft_ms: float | None = None  # time to first token
    tpot_ms: float | None = None  # time per output token after the first
    e2el_ms: float | None = None  # end-to-end latency

    def __post_init__(self) -> None:
        for name, value in self.objectives():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Slo.{name} must be a positive finite number of milliseconds, got {value!r}")

    def objectives(self) -> tuple[tuple[str, float], ...]:
        """The objectives that are set, as ``(name, milliseconds)`` in field order."""
        pairs = (("ttft_ms", self.ttft_ms), ("tpot_ms", self.tpot_ms), ("e2el_ms", self.e2el_ms))
        return tuple((name, value) for name, value in pairs if value is not None)


class LevelMetrics(TypedDict):
    """Serving metrics of one load level (see the module docstring); None where there is nothing to measure."""

    requests: int  # requests sent
    completed: int
    failed: int
    duration_s: float  # the level's wall time, the denominator of the throughputs
    output_tokens: int  # over completed requests
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    ttft_ms_p99: float | None
    ttft_ms_mean: float | None
    tpot_ms_p50: float | None
    tpot_ms_p95: float | None
    tpot_ms_p99: float | None
    tpot_ms_mean: float | None
    itl_ms_p50: float | None  # per token: a chunk of n tokens after g is n gaps of g/n
    itl_ms_p95: float | None
    itl_ms_p99: float | None
    itl_ms_mean: float | None
    e2el_ms_p50: float | None
    e2el_ms_p95: float | None
    e2el_ms_p99: float | None
    e2el_ms_mean: float | None
    chunk_itl_ms_p50: float | None  # vLLM's ITL: one gap per chunk
    chunk_itl_ms_p95: float | None
    chunk_itl_ms_p99: float | None
    chunks_per_request_mean: float | None
    tokens_per_chunk_mean: float | None  # pooled over all chunks of completed requests
    output_tok_s: float
    request_s: float
    goodput_req_s: float | None  # None without SLOs
    slo_attainment: float | None  # good / completed; None without SLOs or without completed requests


class ServingSpeedup(TypedDict):
    """Speculative level against its twin (no speculation) at the same load; None where either side is None or 0."""

    tpot_speedup: float | None  # twin TPOT p50 / speculative TPOT p50: > 1 = speculation is faster per token
    throughput_speedup: float | None  # speculative output tok/s / twin output tok/s
    ttft_ratio: float | None  # speculative TTFT p50 / twin TTFT p50: > 1 = speculation made TTFT worse


@dataclass(frozen=True)
class _Distribution:
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None


# --------------------------------------------------------------------------- validation


def _check_time(value: float, what: str, index: int) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"request {index}: {what} must be a finite number of seconds >= 0, got {value!r}")


def _validate(request: RequestTiming) -> None:
    """ValueError naming the request when a completed request's timings contradict each other."""
    i = request.index
    if request.output_tokens < 0:
        raise ValueError(f"request {i}: output_tokens must be >= 0, got {request.output_tokens}")
    if not request.ok:
        return
    if request.ttft_s is None or request.latency_s is None:
        raise ValueError(f"request {i}: ok but ttft_s={request.ttft_s!r}, latency_s={request.latency_s!r}; "
                         "a completed request needs both (mark it ok=False with an error otherwise)")
    _check_time(request.ttft_s, "ttft_s", i)
    _check_time(request.latency_s, "latency_s", i)
    if request.latency_s < request.ttft_s:
        raise ValueError(f"request {i}: latency_s {request.latency_s!r} < ttft_s {request.ttft_s!r}; "
                         "the last chunk cannot arrive before the first")
    if len(request.chunk_tokens) != len(request.chunk_gaps_s) + 1:
        raise ValueError(f"request {i}: {len(request.chunk_tokens)} chunk_tokens for {len(request.chunk_gaps_s)} "
                         "chunk_gaps_s; there must be one more chunk than gaps (the first chunk has no gap)")
    for gap in request.chunk_gaps_s:
        _check_time(gap, "every chunk gap", i)
    if any(n < 1 for n in request.chunk_tokens):
        raise ValueError(f"request {i}: chunk_tokens {request.chunk_tokens} has a chunk with no tokens; "
                         "only output-carrying chunks belong in chunk_tokens and chunk_gaps_s")


# --------------------------------------------------------------------------- per-request values


def tpot_s(request: RequestTiming) -> float | None:
    """vLLM's TPOT of one completed request, ``(latency - ttft) / (output_tokens - 1)``; None if output_tokens <= 1."""
    if request.ttft_s is None or request.latency_s is None or request.output_tokens <= 1:
        return None
    return (request.latency_s - request.ttft_s) / (request.output_tokens - 1)


def token_gaps_s(request: RequestTiming) -> list[float]:
    """Per-token gaps: each chunk of n tokens after a gap g gives n gaps of g/n (the first chunk gives none)."""
    gaps: list[float] = []
    for gap, tokens in zip(request.chunk_gaps_s, request.chunk_tokens[1:]):
        gaps.extend([gap / tokens] * tokens)
    return gaps


def _good(request: RequestTiming, slo: Slo) -> bool:
    """Whether a completed request meets every set objective: ``slo / 1000 >= value_s`` as vLLM compares.

    TPOT counts as 0 when output_tokens <= 1 (vLLM's rule).
    """
    values_s = {"ttft_ms": request.ttft_s or 0.0, "tpot_ms": tpot_s(request) or 0.0,
                "e2el_ms": request.latency_s or 0.0}
    return all(limit / MS_PER_S >= values_s[name] for name, limit in slo.objectives())


# --------------------------------------------------------------------------- aggregation


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _distribution(values_s: Iterable[float]) -> _Distribution:
    """p50/p95/p99/mean in milliseconds of seconds ``values_s``; all None when there are none."""
    ms = [v * MS_PER_S for v in values_s]
    if not ms:
        return _Distribution(None, None, None, None)
    return _Distribution(percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), _mean(ms))


def _goodput(done: Sequence[RequestTiming], duration_s: float, slo: Slo | None) -> tuple[float | None, float | None]:
    """(good requests per second, good / completed); both None without objectives, attainment None without requests."""
    if slo is None or not slo.objectives():
        return None, None
    good = sum(_good(r, slo) for r in done)
    return good / duration_s, (good / len(done) if done else None)


def level_metrics(requests: Sequence[RequestTiming], duration_s: float, slo: Slo | None = None) -> LevelMetrics:
    """The serving metrics of one load level (definitions in the module docstring).

    ``requests``: every request of the level, failed ones included; ``duration_s``: the level's wall time (> 0),
    the denominator of every rate. ValueError for a non-positive duration or an inconsistent completed request
    (ok without ttft_s/latency_s, latency before TTFT, negative times, ``len(chunk_tokens) !=
    len(chunk_gaps_s) + 1``, a chunk of zero tokens). ``sum(chunk_tokens) != output_tokens`` is accepted.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive finite number of seconds, got {duration_s!r}")
    for request in requests:
        _validate(request)
    done = [r for r in requests if r.ok]
    ttft = _distribution(r.ttft_s for r in done if r.ttft_s is not None)
    tpot = _distribution(t for t in map(tpot_s, done) if t is not None)
    itl = _distribution(gap for r in done for gap in token_gaps_s(r))
    e2el = _distribution(r.latency_s for r in done if r.latency_s is not None)
    chunk_itl = _distribution(gap for r in done for gap in r.chunk_gaps_s)
    chunks = [len(r.chunk_tokens) for r in done]
    output_tokens = sum(r.output_tokens for r in done)
    goodput, attainment = _goodput(done, duration_s, slo)
    return LevelMetrics(
        requests=len(requests), completed=len(done), failed=len(requests) - len(done), duration_s=duration_s,
        output_tokens=output_tokens,
        ttft_ms_p50=ttft.p50, ttft_ms_p95=ttft.p95, ttft_ms_p99=ttft.p99, ttft_ms_mean=ttft.mean,
        tpot_ms_p50=tpot.p50, tpot_ms_p95=tpot.p95, tpot_ms_p99=tpot.p99, tpot_ms_mean=tpot.mean,
        itl_ms_p50=itl.p50, itl_ms_p95=itl.p95, itl_ms_p99=itl.p99, itl_ms_mean=itl.mean,
        e2el_ms_p50=e2el.p50, e2el_ms_p95=e2el.p95, e2el_ms_p99=e2el.p99, e2el_ms_mean=e2el.mean,
        chunk_itl_ms_p50=chunk_itl.p50, chunk_itl_ms_p95=chunk_itl.p95, chunk_itl_ms_p99=chunk_itl.p99,
        chunks_per_request_mean=_mean([float(n) for n in chunks]),
        tokens_per_chunk_mean=sum(sum(r.chunk_tokens) for r in done) / sum(chunks) if chunks else None,
        output_tok_s=output_tokens / duration_s, request_s=len(done) / duration_s,
        goodput_req_s=goodput, slo_attainment=attainment,
    )


# --------------------------------------------------------------------------- speculative vs twin


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is None or zero."""
    if not numerator or not denominator:
        return None
    return numerator / denominator


def speedups(spec: LevelMetrics, twin: LevelMetrics) -> ServingSpeedup:
    """The speculative level ``spec`` against its no-speculation ``twin`` at the same load (see ServingSpeedup)."""
    return ServingSpeedup(
        tpot_speedup=_ratio(twin["tpot_ms_p50"], spec["tpot_ms_p50"]),
        throughput_speedup=_ratio(spec["output_tok_s"], twin["output_tok_s"]),
        ttft_ratio=_ratio(spec["ttft_ms_p50"], twin["ttft_ms_p50"]),
    )


# --------------------------------------------------------------------------- crossover across load levels


def _measured(levels: Sequence[tuple[float, float | None]]) -> list[tuple[float, float]]:
    """The (load, speedup) pairs with a speedup, by increasing load."""
    return sorted((load, value) for load, value in levels if value is not None)


def _first_loss(measured: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """The lowest-load (load, speedup) pair of ``measured`` (sorted) with speedup below 1.0, or None."""
    return next(((load, value) for load, value in measured if value < 1.0), None)


def crossover(levels: Sequence[tuple[float, float | None]]) -> float | None:
    """The lowest load whose speedup is below 1.0, or None if none is (levels: (load, speedup), any order).

    Loads are concurrencies or request rates; levels with a None speedup are skipped.
    """
    loss = _first_loss(_measured(levels))
    return None if loss is None else loss[0]


def _load_text(axis: Axis, load: float, first: bool) -> str:
    """``concurrency 4`` (or ``4`` after the first mention) / ``4 req/s``."""
    if axis == "concurrency":
        return f"concurrency {load:g}" if first else f"{load:g}"
    return f"{load:g} req/s"


def _always_pays(draft: str, axis: Axis, measured: Sequence[tuple[float, float]], name: str) -> str:
    low, high = measured[0][0], measured[-1][0]
    worst_load, worst = min(measured, key=lambda pair: pair[1])
    what, unit = ("concurrency", "") if axis == "concurrency" else ("request rate", " req/s")
    span = f"{low:g}{unit}" if low == high else f"{low:g}-{high:g}{unit}"
    return (f"{draft}: speculation pays at every measured {what} ({span}, lowest {name} {worst:.2f}x "
            f"at {_load_text(axis, worst_load, False)}).")


def _never_pays(draft: str, axis: Axis, measured: Sequence[tuple[float, float]], name: str) -> str:
    best = max(value for _, value in measured)
    start = _load_text(axis, measured[0][0], True)
    return f"{draft}: speculation never pays ({name} {best:.2f}x or less from {start})."


def _stops_paying(draft: str, axis: Axis, measured: Sequence[tuple[float, float]], loss: tuple[float, float],
                  name: str) -> str:
    """Pays below ``loss``'s load (if measured there), stops at it, and says where it pays again above it."""
    before = [pair for pair in measured if pair[0] < loss[0]]
    if before:
        sentence = (f"{draft}: speculation pays up to {_load_text(axis, before[-1][0], True)} ({name} "
                    f"{before[-1][1]:.2f}x) and stops paying at {_load_text(axis, loss[0], False)} ({loss[1]:.2f}x)")
    else:
        sentence = f"{draft}: speculation does not pay at {_load_text(axis, loss[0], True)} ({name} {loss[1]:.2f}x)"
    again = next(((load, value) for load, value in measured if load > loss[0] and value >= 1.0), None)
    if again is not None:
        sentence += f"; it pays again at {_load_text(axis, again[0], False)} ({again[1]:.2f}x)"
    return sentence + "."


def crossover_sentence(draft: str, axis: str, levels: Sequence[tuple[float, float | None]],
                       speedup_name: str) -> str:
    """One report sentence on where speculation stops paying across a load sweep.

    ``axis``: ``"concurrency"`` or ``"request_rate"``; ``levels``: (load, speedup) as for :func:`crossover`
    (None speedups skipped); ``speedup_name``: e.g. ``"TPOT speedup"``. Speculation pays at a level whose speedup
    is >= 1.0, as in :func:`crossover`. The sentences:

    - ``"draft-medium: speculation pays up to concurrency 4 (TPOT speedup 1.31x) and stops paying at 16 (0.87x)."``
      (the highest load below the crossover, then the crossover);
    - ``"draft-medium: speculation pays at every measured concurrency (1-16, lowest TPOT speedup 1.12x at 16)."``;
    - ``"draft-medium: speculation never pays (TPOT speedup 0.95x or less from concurrency 1)."`` (the best level);
    - a sweep that pays again above the crossover says so instead of "never": ``"...: speculation does not pay at
      concurrency 1 (TPOT speedup 0.90x); it pays again at 4 (1.20x)."``, or appends ``"; it pays again at ..."``;
    - ``"draft-medium: no TPOT speedup measured at any concurrency."`` when no level has a speedup.

    Request rates read ``"4 req/s"``. ValueError for an unknown axis.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")
    ax: Axis = "concurrency" if axis == "concurrency" else "request_rate"
    measured = _measured(levels)
    if not measured:
        return f"{draft}: no {speedup_name} measured at any {'concurrency' if ax == 'concurrency' else 'request rate'}."
    loss = _first_loss(measured)
    if loss is None:
        return _always_pays(draft, ax, measured, speedup_name)
    if all(value < 1.0 for _, value in measured):
        return _never_pays(draft, ax, measured, speedup_name)
    return _stops_paying(draft, ax, measured, loss, speedup_name)
