"""Tests for specperf.analysis.serving: hand-made requests with exact expected figures.

Times are picked so that the expected values are exact or one float rounding away (pytest.approx only for that).
vLLM is not installed here, so the vLLM comparison is derived by hand from its ``calculate_metrics`` in
test_matches_vllm_formulas_by_hand.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from specperf.analysis import stats
from specperf.analysis.serving import (
    LevelMetrics,
    RequestTiming,
    Slo,
    crossover,
    crossover_sentence,
    level_metrics,
    speedups,
    token_gaps_s,
)


def request(index: int = 0, ttft: float = 0.1, gaps: tuple[float, ...] = (0.02, 0.02, 0.02),
            tokens: tuple[int, ...] | None = None, output_tokens: int | None = None,
            latency: float | None = None) -> RequestTiming:
    """A completed request; latency defaults to ttft + sum(gaps), output_tokens to sum(tokens), tokens to one each."""
    chunk_tokens = tokens if tokens is not None else (1,) * (len(gaps) + 1)
    return RequestTiming(
        index=index, ok=True, error=None, sent_s=0.0, ttft_s=ttft,
        latency_s=latency if latency is not None else ttft + math.fsum(gaps),
        chunk_gaps_s=gaps, chunk_tokens=chunk_tokens,
        output_tokens=output_tokens if output_tokens is not None else sum(chunk_tokens), prompt_tokens=10,
    )


def failed(index: int) -> RequestTiming:
    return RequestTiming(index=index, ok=False, error="HTTP 500", sent_s=0.0, ttft_s=None, latency_s=None,
                         chunk_gaps_s=(), chunk_tokens=(), output_tokens=0, prompt_tokens=10)


# =========================================================================== per-request figures


def test_tpot_is_vllms_formula() -> None:
    # 5 tokens, TTFT 100 ms, last chunk at 180 ms: TPOT = (0.18 - 0.1) / (5 - 1) = 20 ms.
    m = level_metrics([request(gaps=(0.02, 0.02, 0.02, 0.02))], duration_s=1.0)
    assert m["tpot_ms_p50"] == pytest.approx(20.0)
    assert m["tpot_ms_mean"] == pytest.approx(20.0)
    assert m["ttft_ms_p50"] == pytest.approx(100.0)
    assert m["e2el_ms_p50"] == pytest.approx(180.0)


def test_tpot_follows_the_servers_usage_not_the_chunk_counts() -> None:
    # Chunks count 3 tokens, the usage says 5: TPOT divides by 5 - 1; the chunk counts are not checked against it.
    m = level_metrics([request(gaps=(0.04, 0.04), output_tokens=5)], duration_s=1.0)
    assert m["tpot_ms_p50"] == pytest.approx(20.0)
    assert m["output_tokens"] == 5
    assert m["tokens_per_chunk_mean"] == 1.0


def test_one_token_request_has_no_tpot() -> None:
    m = level_metrics([request(gaps=(), output_tokens=1)], duration_s=1.0)
    assert m["tpot_ms_p50"] is None and m["tpot_ms_mean"] is None
    assert m["itl_ms_p50"] is None and m["chunk_itl_ms_p50"] is None
    assert m["ttft_ms_p50"] == pytest.approx(100.0)


def test_itl_is_per_token_with_multi_token_chunks() -> None:
    # A chunk of 3 tokens 30 ms after the first: three 10 ms gaps; then a chunk of 1 token after 10 ms.
    r = request(gaps=(0.03, 0.01), tokens=(1, 3, 1))
    assert token_gaps_s(r) == pytest.approx([0.01, 0.01, 0.01, 0.01])
    m = level_metrics([r], duration_s=1.0)
    assert m["itl_ms_p50"] == pytest.approx(10.0)
    assert m["itl_ms_p99"] == pytest.approx(10.0)
    assert m["itl_ms_mean"] == pytest.approx(10.0)
    # Mean ITL agrees with TPOT: (0.14 - 0.1) / (5 - 1) = 10 ms.
    assert m["tpot_ms_mean"] == pytest.approx(m["itl_ms_mean"])


def test_chunk_itl_is_vllms_one_gap_per_chunk() -> None:
    m = level_metrics([request(gaps=(0.03, 0.01), tokens=(1, 3, 1))], duration_s=1.0)
    # Chunk gaps 30 and 10 ms: p50 = 20, p95 = 10 + 0.95 * 20 = 29, p99 = 10 + 0.99 * 20 = 29.8.
    assert m["chunk_itl_ms_p50"] == pytest.approx(20.0)
    assert m["chunk_itl_ms_p95"] == pytest.approx(29.0)
    assert m["chunk_itl_ms_p99"] == pytest.approx(29.8)
    assert m["chunks_per_request_mean"] == 3.0
    assert m["tokens_per_chunk_mean"] == pytest.approx(5 / 3)


def test_first_chunk_extra_tokens_add_no_gaps() -> None:
    # The first chunk carries 2 tokens: they arrive with the first token, so only the later chunks add gaps.
    r = request(gaps=(0.02, 0.04), tokens=(2, 1, 2))
    assert token_gaps_s(r) == pytest.approx([0.02, 0.02, 0.02])
    m = level_metrics([r], duration_s=1.0)
    assert m["itl_ms_mean"] == pytest.approx(20.0)
    # TPOT still divides by output_tokens - 1 = 4: (0.16 - 0.1) / 4 = 15 ms.
    assert m["tpot_ms_p50"] == pytest.approx(15.0)


def test_itl_pools_every_gap_of_every_request() -> None:
    a = request(0, gaps=(0.03,), tokens=(1, 3))  # gaps 10, 10, 10 ms
    b = request(1, gaps=(0.04, 0.04))  # gaps 40, 40 ms
    m = level_metrics([a, b], duration_s=1.0)
    pooled = [10.0, 10.0, 10.0, 40.0, 40.0]
    assert m["itl_ms_mean"] == pytest.approx(22.0)
    assert m["itl_ms_p50"] == pytest.approx(10.0)
    # p95: position 4 * 0.95 = 3.8 -> 40 (both neighbours are 40).
    assert m["itl_ms_p95"] == pytest.approx(40.0)
    assert m["itl_ms_p95"] == pytest.approx(stats.percentile(pooled, 95))


# =========================================================================== level figures


def test_failed_requests_are_counted_and_excluded() -> None:
    good = [request(0, ttft=0.1), request(1, ttft=0.3)]
    m = level_metrics([*good, failed(2), failed(3)], duration_s=2.0)
    assert (m["requests"], m["completed"], m["failed"]) == (4, 2, 2)
    assert m["ttft_ms_mean"] == pytest.approx(200.0)
    assert m["output_tokens"] == 8
    assert m["request_s"] == 1.0
    assert m["chunks_per_request_mean"] == 4.0


def test_all_failed_gives_none_distributions_and_zero_rates() -> None:
    m = level_metrics([failed(0), failed(1)], duration_s=4.0, slo=Slo(ttft_ms=100))
    assert (m["requests"], m["completed"], m["failed"], m["output_tokens"]) == (2, 0, 2, 0)
    none_keys = [key for key in LevelMetrics.__annotations__ if key.endswith(("_p50", "_p95", "_p99", "_mean"))]
    assert none_keys and all(m[key] is None for key in none_keys)  # type: ignore[literal-required]
    assert m["output_tok_s"] == 0.0 and m["request_s"] == 0.0
    assert m["goodput_req_s"] == 0.0
    assert m["slo_attainment"] is None


def test_every_key_is_present() -> None:
    m = level_metrics([], duration_s=1.0)
    assert set(m) == set(LevelMetrics.__annotations__)
    assert m["requests"] == 0 and m["tokens_per_chunk_mean"] is None and m["goodput_req_s"] is None


def test_throughputs() -> None:
    rs = [request(0, gaps=(0.02,) * 9), request(1, gaps=(0.02,) * 29)]  # 10 + 30 tokens
    m = level_metrics([*rs, failed(2)], duration_s=4.0)
    assert m["output_tokens"] == 40
    assert m["output_tok_s"] == 10.0
    assert m["request_s"] == 0.5
    assert m["duration_s"] == 4.0


def test_percentiles_agree_with_stats() -> None:
    ttfts = [0.05, 0.31, 0.12, 0.2, 0.07, 0.44, 0.09]
    m = level_metrics([request(i, ttft=t) for i, t in enumerate(ttfts)], duration_s=1.0)
    ms = [t * 1000 for t in ttfts]
    for q in (50, 95, 99):
        assert m[f"ttft_ms_p{q}"] == pytest.approx(stats.percentile(ms, q))  # type: ignore[literal-required]
        assert m[f"e2el_ms_p{q}"] == pytest.approx(stats.percentile([v + 60 for v in ms], q))  # type: ignore[literal-required]
    # By hand: sorted 50 70 90 120 200 310 440; p50 = 120; p95 at 6 * 0.95 = 5.7 -> 310 + 0.7 * 130 = 401.
    assert m["ttft_ms_p50"] == pytest.approx(120.0)
    assert m["ttft_ms_p95"] == pytest.approx(401.0)


def test_matches_vllm_formulas_by_hand() -> None:
    """Two requests and one failure through vLLM's calculate_metrics, by hand (vLLM is not importable here).

    Request A: ttft 0.2, latency 0.5, output_tokens 4, itl [0.1, 0.1, 0.1]. Request B: ttft 0.4, latency 1.0,
    output_tokens 3 in two chunks, itl [0.6]. vLLM: tpots = [(0.5-0.2)/3, (1.0-0.4)/2] = [0.1, 0.3],
    median_tpot_ms = 200; median_ttft_ms = 300; output_throughput = (4 + 3) / 2.0 = 3.5; request_throughput =
    2 / 2.0 = 1.0; its itls = [0.1, 0.1, 0.1, 0.6], median_itl_ms = 100 (our chunk_itl_ms_p50); goodput with
    --goodput tpot:100 counts A only (0.1 <= 0.1): request_goodput = 1 / 2.0 = 0.5. Our per-token ITL splits B's
    two-token chunk: [100, 100, 100, 300, 300] ms, median 100, mean 180.
    """
    a = request(0, ttft=0.2, gaps=(0.1, 0.1, 0.1), latency=0.5)
    b = request(1, ttft=0.4, gaps=(0.6,), tokens=(1, 2), latency=1.0)
    m = level_metrics([a, b, failed(2)], duration_s=2.0, slo=Slo(tpot_ms=100))
    assert m["tpot_ms_p50"] == pytest.approx(200.0)
    assert m["ttft_ms_p50"] == pytest.approx(300.0)
    assert m["output_tok_s"] == 3.5
    assert m["request_s"] == 1.0
    assert m["chunk_itl_ms_p50"] == pytest.approx(100.0)
    assert m["goodput_req_s"] == 0.5
    assert m["itl_ms_p50"] == pytest.approx(100.0)
    assert m["itl_ms_mean"] == pytest.approx(180.0)


# =========================================================================== goodput


# ttft 100 / 300 ms; tpot 20 / 40 ms (4 tokens); e2el 160 / 420 ms.
FAST = request(0, ttft=0.1, gaps=(0.02, 0.02, 0.02), latency=0.16)
SLOW = request(1, ttft=0.3, gaps=(0.04, 0.04, 0.04), latency=0.42)


@pytest.mark.parametrize(("slo", "good"), [
    (Slo(ttft_ms=100), 1),  # boundary equality is good
    (Slo(ttft_ms=99.9), 0),
    (Slo(ttft_ms=300), 2),
    (Slo(tpot_ms=40), 2),
    (Slo(tpot_ms=30), 1),
    (Slo(e2el_ms=160), 1),
    (Slo(e2el_ms=500), 2),
    (Slo(ttft_ms=300, tpot_ms=30), 1),  # every set objective must hold
    (Slo(ttft_ms=100, e2el_ms=500), 1),
    (Slo(ttft_ms=300, tpot_ms=40, e2el_ms=420), 2),
    (Slo(ttft_ms=300, tpot_ms=40, e2el_ms=419), 1),
    (Slo(ttft_ms=50, tpot_ms=40, e2el_ms=500), 0),
])
def test_goodput(slo: Slo, good: int) -> None:
    m = level_metrics([FAST, SLOW, failed(2)], duration_s=2.0, slo=slo)
    assert m["goodput_req_s"] == good / 2.0
    assert m["slo_attainment"] == good / 2  # over completed requests, the failure excluded


def test_goodput_one_token_request_has_tpot_zero() -> None:
    one = request(0, ttft=0.1, gaps=(), output_tokens=1)
    m = level_metrics([one], duration_s=1.0, slo=Slo(tpot_ms=0.001))
    assert m["goodput_req_s"] == 1.0 and m["slo_attainment"] == 1.0


def test_no_goodput_without_objectives() -> None:
    for slo in (None, Slo()):
        m = level_metrics([FAST], duration_s=1.0, slo=slo)
        assert m["goodput_req_s"] is None and m["slo_attainment"] is None


@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_slo_rejects_non_positive_or_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="Slo.tpot_ms must be a positive finite"):
        Slo(tpot_ms=value)


# =========================================================================== validation


@pytest.mark.parametrize(("change", "message"), [
    (dict(ttft_s=None), "ok but ttft_s=None"),
    (dict(latency_s=None), "latency_s=None"),
    (dict(chunk_tokens=(1, 1)), "2 chunk_tokens for 3 chunk_gaps_s"),
    (dict(chunk_tokens=(1, 0, 1, 1)), "a chunk with no tokens"),
    (dict(latency_s=0.05), "latency_s 0.05 < ttft_s 0.1"),
    (dict(ttft_s=-0.1), "ttft_s must be a finite number"),
    (dict(chunk_gaps_s=(0.02, math.nan, 0.02)), "every chunk gap must be"),
    (dict(output_tokens=-1), "output_tokens must be >= 0"),
])
def test_inconsistent_request_raises(change: dict[str, object], message: str) -> None:
    bad = dataclasses.replace(request(7), **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"request 7: .*{message}"):
        level_metrics([request(0), bad], duration_s=1.0)


def test_chunk_token_sum_may_differ_from_usage() -> None:
    m = level_metrics([request(gaps=(0.02,), tokens=(1, 1), output_tokens=9)], duration_s=1.0)
    assert m["output_tokens"] == 9


def test_failed_request_fields_are_not_checked() -> None:
    odd = dataclasses.replace(failed(0), chunk_tokens=(1, 2))
    assert level_metrics([odd], duration_s=1.0)["failed"] == 1


@pytest.mark.parametrize("duration", [0.0, -1.0, math.inf])
def test_duration_must_be_positive(duration: float) -> None:
    with pytest.raises(ValueError, match="duration_s must be a positive finite"):
        level_metrics([request()], duration_s=duration)


# =========================================================================== speedups


def metrics_with(tpot: float | None, tok_s: float, ttft: float | None) -> LevelMetrics:
    base = level_metrics([], duration_s=1.0)
    return {**base, "tpot_ms_p50": tpot, "output_tok_s": tok_s, "ttft_ms_p50": ttft}


def test_speedups() -> None:
    spec = metrics_with(tpot=10.0, tok_s=300.0, ttft=60.0)
    twin = metrics_with(tpot=25.0, tok_s=200.0, ttft=50.0)
    assert speedups(spec, twin) == {"tpot_speedup": 2.5, "throughput_speedup": 1.5, "ttft_ratio": 1.2}


@pytest.mark.parametrize(("spec", "twin"), [
    (metrics_with(None, 0.0, None), metrics_with(25.0, 200.0, 50.0)),
    (metrics_with(10.0, 300.0, 60.0), metrics_with(None, 0.0, None)),
    (metrics_with(0.0, 300.0, 0.0), metrics_with(25.0, 0.0, 50.0)),
    (metrics_with(10.0, 0.0, 60.0), metrics_with(0.0, 200.0, 0.0)),
])
def test_speedups_none_when_either_side_is_none_or_zero(spec: LevelMetrics, twin: LevelMetrics) -> None:
    assert speedups(spec, twin) == {"tpot_speedup": None, "throughput_speedup": None, "ttft_ratio": None}


# =========================================================================== crossover


@pytest.mark.parametrize(("levels", "expected"), [
    ([(1, 1.3), (4, 1.1), (16, 1.05)], None),  # never drops below 1
    ([(1, 0.9), (4, 0.8)], 1),  # at the first level
    ([(1, 1.3), (4, 1.0), (8, 0.95), (16, 0.8)], 8),  # in the middle; exactly 1.0 still pays
    ([(16, 0.8), (1, 1.3), (8, 0.95), (4, 1.1)], 8),  # unsorted
    ([(1, 1.3), (4, None), (8, 0.9)], 8),  # None skipped
    ([(1, None), (4, 0.9)], 4),
    ([(1, None)], None),
    ([], None),
    ([(1, 1.2), (4, 0.9), (16, 1.1)], 4),  # lowest load below 1, even if a higher load recovers
    ([(0.5, 1.2), (2.0, 0.99)], 2.0),  # request rates
])
def test_crossover(levels: list[tuple[float, float | None]], expected: float | None) -> None:
    assert crossover(levels) == expected


@pytest.mark.parametrize(("axis", "levels", "sentence"), [
    ("concurrency", [(16, 0.87), (1, 1.52), (4, 1.31)],
     "draft-medium: speculation pays up to concurrency 4 (TPOT speedup 1.31x) and stops paying at 16 (0.87x)."),
    ("concurrency", [(1, 1.4), (4, 1.2), (16, 1.12)],
     "draft-medium: speculation pays at every measured concurrency (1-16, lowest TPOT speedup 1.12x at 16)."),
    ("concurrency", [(1, 0.999), (4, 0.8)],
     "draft-medium: speculation never pays (TPOT speedup 1.00x or less from concurrency 1)."),
    ("concurrency", [(1, 0.9), (4, 1.2)],
     "draft-medium: speculation does not pay at concurrency 1 (TPOT speedup 0.90x); it pays again at 4 (1.20x)."),
    ("concurrency", [(1, 1.3), (4, 0.9), (16, 1.05)],
     "draft-medium: speculation pays up to concurrency 1 (TPOT speedup 1.30x) and stops paying at 4 (0.90x); "
     "it pays again at 16 (1.05x)."),
    ("concurrency", [(2, 1.5)],
     "draft-medium: speculation pays at every measured concurrency (2, lowest TPOT speedup 1.50x at 2)."),
    ("concurrency", [(1, None)], "draft-medium: no TPOT speedup measured at any concurrency."),
    ("request_rate", [(0.5, 1.4), (2, 1.1), (8, 0.7)],
     "draft-medium: speculation pays up to 2 req/s (TPOT speedup 1.10x) and stops paying at 8 req/s (0.70x)."),
    ("request_rate", [(0.5, 1.4), (2, 1.1)],
     "draft-medium: speculation pays at every measured request rate (0.5-2 req/s, lowest TPOT speedup 1.10x "
     "at 2 req/s)."),
    ("request_rate", [(1, 0.8)],
     "draft-medium: speculation never pays (TPOT speedup 0.80x or less from 1 req/s)."),
])
def test_crossover_sentence(axis: str, levels: list[tuple[float, float | None]], sentence: str) -> None:
    assert crossover_sentence("draft-medium", axis, levels, "TPOT speedup") == sentence


def test_crossover_sentence_rejects_unknown_axis() -> None:
    with pytest.raises(ValueError, match="axis must be one of concurrency, request_rate"):
        crossover_sentence("d", "batch", [(1, 1.0)], "TPOT speedup")
