"""Tests for specperf.engine.server.client and specperf.bench.load against a real HTTP server in the test process
(tests/helpers_sse_server.py) that streams the way vLLM does. No assertion depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import math
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from specperf.bench.load import LoadLevel, arrival_offsets, run_level
from specperf.engine.server.client import (
    Completion,
    ServerNotReady,
    get_metrics_text,
    list_models,
    request_body,
    stream_completion,
    wait_healthy,
)
from tests.helpers_sse_server import (
    ERROR_MESSAGE,
    FIRST_TOKEN,
    SPEC,
    STALL_S,
    StubServer,
    Variant,
    output_chunks,
    running_stub,
)

MAX_TOKENS = 8  # chunks of 1, 3, 2, 2 tokens
PROMPT_TAIL = [11, 12, 13]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with running_stub() as server:
        yield server


@pytest.fixture
def fresh(stub: StubServer) -> StubServer:
    """The stub with its records cleared and its health restored."""
    with stub.state.lock:
        stub.state.bodies.clear()
        stub.state.in_flight = 0
        stub.state.max_in_flight = 0
    stub.state.healthy = True
    stub.state.health_endpoint = True
    return stub


def complete(url: str, variant: int, *, index: int = 0, timeout_s: float = 30.0, **overrides: Any) -> Completion:
    """One streamed completion of a prompt that selects ``variant``."""
    options: dict[str, Any] = dict(max_tokens=MAX_TOKENS, temperature=0.0, seed=None, ignore_eos=True)
    options.update(overrides)

    async def go() -> Completion:
        async with httpx.AsyncClient() as client:
            return await stream_completion(client, url, "stub-model", [variant, *PROMPT_TAIL], index=index,
                                           level_start=time.perf_counter(), timeout_s=timeout_s, **options)

    return asyncio.run(go())


def closed_port() -> str:
    """A URL nothing listens on (a port the OS just handed out and took back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


EXPECTED_IDS = tuple(FIRST_TOKEN + i for i in range(MAX_TOKENS))
EXPECTED_CHUNKS = (1, 3, 2, 2)


# --------------------------------------------------------------------------- the request


def test_request_body_asks_for_token_ids_and_continuous_usage() -> None:
    body = request_body("m", [1, 2], max_tokens=5, temperature=0.7, seed=9, ignore_eos=False)
    assert body == {"model": "m", "prompt": [1, 2], "max_tokens": 5, "temperature": 0.7, "stream": True,
                    "stream_options": {"include_usage": True, "continuous_usage_stats": True},
                    "return_token_ids": True, "ignore_eos": False, "seed": 9}
    assert "seed" not in request_body("m", [1], max_tokens=1, temperature=0.0, seed=None, ignore_eos=True)


def test_the_server_receives_the_body(fresh: StubServer) -> None:
    complete(fresh.url, Variant.NORMAL, seed=5, temperature=0.5)
    (body,) = fresh.state.bodies
    assert body["prompt"] == [Variant.NORMAL, *PROMPT_TAIL]
    assert body["seed"] == 5 and body["stream"] is True and body["return_token_ids"] is True


# --------------------------------------------------------------------------- a normal stream


def test_normal_stream_tokens_timing_and_spec(fresh: StubServer) -> None:
    completion = complete(fresh.url, Variant.NORMAL, index=4)
    timing = completion.timing
    assert timing.ok and timing.error is None and timing.index == 4
    assert completion.token_ids == EXPECTED_IDS
    assert timing.chunk_tokens == EXPECTED_CHUNKS
    assert timing.output_tokens == MAX_TOKENS
    assert timing.prompt_tokens == 1 + len(PROMPT_TAIL)
    assert len(timing.chunk_gaps_s) == len(EXPECTED_CHUNKS) - 1
    assert all(gap > 0 for gap in timing.chunk_gaps_s)
    assert timing.ttft_s is not None and timing.latency_s is not None
    assert 0 < timing.ttft_s < timing.latency_s
    assert math.isclose(timing.latency_s - timing.ttft_s, sum(timing.chunk_gaps_s), rel_tol=1e-9, abs_tol=1e-12)
    assert completion.text == "".join(f"t{t} " for t in EXPECTED_IDS)
    assert completion.finish_reason == "length"
    assert completion.spec == SPEC


def test_chunk_schedule_of_the_stub() -> None:
    assert [len(ids) for ids in output_chunks(MAX_TOKENS)] == list(EXPECTED_CHUNKS)


def test_tokens_from_continuous_usage_without_token_ids(fresh: StubServer) -> None:
    completion = complete(fresh.url, Variant.USAGE_ONLY)
    assert completion.timing.ok
    assert completion.token_ids is None
    assert completion.timing.chunk_tokens == EXPECTED_CHUNKS
    assert completion.timing.output_tokens == MAX_TOKENS
    assert completion.spec == SPEC


def test_one_token_per_chunk_without_usage(fresh: StubServer) -> None:
    completion = complete(fresh.url, Variant.NO_USAGE)
    timing = completion.timing
    assert timing.ok
    assert completion.token_ids is None and completion.spec is None
    assert timing.chunk_tokens == (1, 1, 1, 1)
    assert timing.output_tokens == 4  # the sum of the chunks' counts: no usage says otherwise
    assert timing.prompt_tokens == 1 + len(PROMPT_TAIL)  # the prompt's length
    assert completion.finish_reason == "length"


# --------------------------------------------------------------------------- failures never raise


def test_http_error_status_names_the_request_and_the_servers_message(fresh: StubServer) -> None:
    timing = complete(fresh.url, Variant.HTTP_ERROR, index=3).timing
    assert not timing.ok
    assert timing.error == f"request 3: HTTP 400 Bad Request: {ERROR_MESSAGE} (BadRequestError, 400)"
    assert timing.ttft_s is None and timing.chunk_tokens == ()


def test_error_event_mid_stream(fresh: StubServer) -> None:
    completion = complete(fresh.url, Variant.ERROR_EVENT, index=5)
    timing = completion.timing
    assert not timing.ok
    assert timing.error == ("request 5: the server sent an error after 2 chunks: Internal server error "
                            "(InternalServerError, 500)")
    assert timing.chunk_tokens == (1, 3)  # what arrived before the error


def test_dropped_connection(fresh: StubServer) -> None:
    timing = complete(fresh.url, Variant.DROP, index=6).timing
    assert not timing.ok and timing.error is not None
    assert timing.error.startswith("request 6: the connection broke after 2 chunks: ")
    assert "\n" not in timing.error


def test_stream_without_done(fresh: StubServer) -> None:
    timing = complete(fresh.url, Variant.NO_DONE, index=7).timing
    assert not timing.ok
    assert timing.error == "request 7: the stream ended after 5 chunks without [DONE] (server closed the connection)"


def test_timeout(fresh: StubServer) -> None:
    timeout_s = STALL_S / 20
    timing = complete(fresh.url, Variant.STALL, index=8, timeout_s=timeout_s).timing
    assert not timing.ok
    assert timing.error is not None and timing.error.startswith("request 8: timed out")


def test_connection_refused() -> None:
    url = closed_port()
    timing = complete(url, Variant.NORMAL, index=9).timing
    assert not timing.ok and timing.error is not None
    assert timing.error.startswith(f"request 9: cannot connect to {url}: ")


# --------------------------------------------------------------------------- models, metrics, health


def test_list_models(fresh: StubServer) -> None:
    async def go() -> list[str]:
        async with httpx.AsyncClient() as client:
            return await list_models(client, fresh.url)

    assert asyncio.run(go()) == ["stub-model"]


def test_metrics_missing_or_unreachable_is_none(fresh: StubServer) -> None:
    async def go(url: str) -> str | None:
        async with httpx.AsyncClient() as client:
            return await get_metrics_text(client, url)

    assert asyncio.run(go(fresh.url)) is None  # the stub answers 404
    assert asyncio.run(go(closed_port())) is None


def test_wait_healthy_on_health_or_models(fresh: StubServer) -> None:
    asyncio.run(wait_healthy(fresh.url, 10.0, lambda: True))
    fresh.state.health_endpoint = False
    asyncio.run(wait_healthy(fresh.url, 10.0, lambda: True))


def test_wait_healthy_times_out(fresh: StubServer) -> None:
    fresh.state.healthy = False
    with pytest.raises(ServerNotReady, match=r"did not become healthy within 0.2 s \(GET /v1/models: HTTP 503\)"):
        asyncio.run(wait_healthy(fresh.url, 0.2, lambda: True))


def test_wait_healthy_stops_when_the_process_dies() -> None:
    with pytest.raises(ServerNotReady, match="the server process exited"):
        asyncio.run(wait_healthy(closed_port(), 60.0, lambda: False))


# --------------------------------------------------------------------------- load levels


def test_level_labels() -> None:
    assert LoadLevel(concurrency=4).label == "c4"
    assert LoadLevel(rate=2.0).label == "r2"
    assert LoadLevel(rate=0.5).label == "r0.5"
    assert LoadLevel(rate=math.inf).label == "rinf"
    assert LoadLevel(rate=2.0, concurrency=4).label == "r2c4"


@pytest.mark.parametrize("kwargs", [{}, {"concurrency": 0}, {"rate": 0.0}, {"rate": 1.0, "burstiness": 0.0}])
def test_bad_levels(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="LoadLevel"):
        LoadLevel(**kwargs)


def test_arrival_offsets_deterministic_per_seed() -> None:
    first = arrival_offsets(50, 4.0, 1.0, seed=7)
    assert first == arrival_offsets(50, 4.0, 1.0, seed=7)
    assert first != arrival_offsets(50, 4.0, 1.0, seed=8)
    assert first[0] == 0.0 and len(first) == 50
    assert all(b >= a for a, b in zip(first, first[1:]))
    assert arrival_offsets(5, math.inf, 1.0, seed=1) == [0.0] * 5
    assert arrival_offsets(0, 1.0, 1.0, seed=1) == []


@pytest.mark.parametrize("burstiness", [1.0, 0.5, 4.0])
def test_arrival_gaps_average_one_over_rate(burstiness: float) -> None:
    rate, n = 5.0, 20001
    offsets = arrival_offsets(n, rate, burstiness, seed=3)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
    # Gamma(k, 1/(rate k)): variance 1/(k rate^2), so burstier (smaller k) means more spread
    assert statistics.variance(gaps) == pytest.approx(1 / (burstiness * rate**2), rel=0.15)


def run(url: str, level: LoadLevel, *, requests: int, warmup: int = 0, variant: int = Variant.NORMAL,
        temperature: float = 0.0) -> Any:
    prompts = [[variant, 20 + i] for i in range(3)]
    return run_level(url, "stub-model", prompts, level, requests=requests, warmup=warmup, max_tokens=MAX_TOKENS,
                     temperature=temperature, seed=100, ignore_eos=True, timeout_s=30.0)


def test_closed_loop_concurrency_is_bounded(fresh: StubServer) -> None:
    result = run(fresh.url, LoadLevel(concurrency=2), requests=6, variant=Variant.SLOW)
    assert fresh.state.max_in_flight == 2
    assert [c.timing.index for c in result.completions] == list(range(6))
    assert all(c.timing.ok for c in result.completions)
    first_send = min(c.timing.sent_s for c in result.completions)
    assert result.duration_s >= max(c.timing.sent_s + c.timing.latency_s for c in result.completions) - first_send


def test_prompts_cycle_and_seeds_follow_the_index(fresh: StubServer) -> None:
    run(fresh.url, LoadLevel(concurrency=1), requests=4, temperature=0.8)
    bodies = fresh.state.bodies
    assert [b["prompt"] for b in bodies] == [[Variant.NORMAL, 20], [Variant.NORMAL, 21], [Variant.NORMAL, 22],
                                             [Variant.NORMAL, 20]]
    assert [b["seed"] for b in bodies] == [100, 101, 102, 103]


def test_no_seed_when_greedy(fresh: StubServer) -> None:
    run(fresh.url, LoadLevel(concurrency=2), requests=2)
    assert all("seed" not in b for b in fresh.state.bodies)


def test_warmup_requests_are_sent_but_not_returned(fresh: StubServer) -> None:
    result = run(fresh.url, LoadLevel(rate=math.inf, concurrency=3), requests=3, warmup=2)
    assert len(fresh.state.bodies) == 5
    assert [c.timing.index for c in result.completions] == [0, 1, 2]
    assert all(c.token_ids == EXPECTED_IDS for c in result.completions)
    assert all(c.timing.sent_s >= 0 for c in result.completions)


def test_open_loop_returns_every_request_in_order(fresh: StubServer) -> None:
    result = run(fresh.url, LoadLevel(rate=200.0), requests=5)
    assert [c.timing.index for c in result.completions] == list(range(5))
    assert all(c.timing.ok for c in result.completions)


def test_failed_requests_are_completions_not_exceptions(fresh: StubServer) -> None:
    result = run(fresh.url, LoadLevel(concurrency=2), requests=3, variant=Variant.HTTP_ERROR)
    errors = [c.timing.error for c in result.completions]
    assert all(error is not None and error.startswith(f"request {i}: HTTP 400") for i, error in enumerate(errors))
