"""Serving mode's case layer against a real HTTP stub (tests/helpers_sse_server.py): attaching checks the served
model names, a server without /metrics gives null acceptance with a note (never 0), a request that fails mid-stream
fails its case naming the request, and streamed chunks become decode results with the server's counters. The vLLM
end-to-end runs are in tests/vllm_engine/test_serving.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from specperf.bench.serving_cases import Endpoint, RequestFailed, ServingCases, parse_load
from specperf.config import parse_config
from specperf.config.cases import Case, build_cases
from specperf.engine.server.launch import ServerError, free_port
from tests.helpers_sse_server import FIRST_TOKEN, StubServer, Variant, running_stub

SUITE = {
    "verifier": "embedded:verifier", "device": "cpu",
    "drafts": [{"name": "served", "model": "embedded:draft-small", "engine": "server"}],
    "k": [4], "generation": {"max_new_tokens": 8},
    "serving": {"concurrency": [2], "requests": 3, "warmup_requests": 1},
}


@pytest.fixture
def stubs() -> Iterator[tuple[StubServer, StubServer]]:
    with running_stub() as spec, running_stub() as twin:
        yield spec, twin


def _cases(spec_url: str, twin_url: str, **serving: object) -> tuple[ServingCases, Case]:
    suite = dict(SUITE, serving={**SUITE["serving"], "url": spec_url, "baseline_url": twin_url,  # type: ignore[dict-item]
                                 **serving})
    config = parse_config(suite)
    (case,) = build_cases(config)[0]
    return ServingCases(config, "cpu", lambda text: [len(text)]), case


def test_a_server_case_id_ends_in_its_load_level() -> None:
    suite = dict(SUITE, serving={"concurrency": [1, 4], "request_rate": [0.5, "inf"]})
    ids = [case.id for case in build_cases(parse_config(suite))[0]]
    assert ids == ["served-k4-0:8-c1", "served-k4-0:8-c4", "served-k4-0:8-r0.5", "served-k4-0:8-rinf"]
    assert parse_load("c4", 1.0).concurrency == 4 and parse_load("r0.5", 2.0).rate == 0.5


def test_attaching_reads_the_only_served_model(stubs: tuple[StubServer, StubServer]) -> None:
    serving, case = _cases(stubs[0].url, stubs[1].url)
    spec, twin = serving.endpoints(case)
    assert (spec.model, twin.model) == ("stub-model", "stub-model")


def test_a_model_name_the_server_does_not_serve_is_refused(stubs: tuple[StubServer, StubServer]) -> None:
    serving, case = _cases(stubs[0].url, stubs[1].url, model_name="gpt2-xl")
    with pytest.raises(ServerError, match=r"serves stub-model, not 'gpt2-xl'; fix: set serving.model_name"):
        serving.endpoints(case)


def test_an_unreachable_url_is_one_clear_error() -> None:
    port = free_port("127.0.0.1")
    serving, case = _cases(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{free_port('127.0.0.1')}")
    with pytest.raises(ServerError, match=rf"at http://127.0.0.1:{port} is unreachable .*fix: start it"):
        serving.endpoints(case)


def test_a_server_without_metrics_gives_null_acceptance_with_a_note(stubs: tuple[StubServer, StubServer]) -> None:
    serving, case = _cases(stubs[0].url, stubs[1].url)
    counters, note = serving.counters(Endpoint(stubs[0].url, "stub-model", "the speculative server"))
    assert counters is None
    assert note == f"{stubs[0].url}/metrics is missing: acceptance from the server's counters is null"


def test_a_request_that_fails_mid_stream_fails_its_case_naming_it(stubs: tuple[StubServer, StubServer]) -> None:
    serving, case = _cases(stubs[0].url, stubs[1].url)
    spec, _ = serving.endpoints(case)
    prompts = [[Variant.NORMAL, 5], [Variant.ERROR_EVENT, 5]]  # request 1 streams two chunks, then an error event
    with pytest.raises(RequestFailed, match=r"served-k4-0:8-c2: 1 of 3 request\(s\) to the speculative server .* "
                                            r"failed; first: request 1: the server sent an error after"):
        serving.level(spec, case, prompts, warmup=False)


def test_streamed_chunks_become_decode_results(stubs: tuple[StubServer, StubServer]) -> None:
    serving, case = _cases(stubs[0].url, stubs[1].url)
    spec, _ = serving.endpoints(case)
    prompts = [[Variant.NORMAL, 5, 6]]
    run = serving.level(spec, case, prompts, warmup=False)
    results = serving.results(run, case, prompts, speculative=True)
    assert [r.tokens for r in results] == [[FIRST_TOKEN + i for i in range(8)]] * 3
    assert all(r.prompt_len == 3 and r.k == 4 and r.backend == "server" for r in results)
    # The stub's per-request metrics carry no per-step counts: the counters are unknown, never zero.
    assert all(r.proposed is None and r.accepted is None for r in results)
    assert all(0 < r.ttft_s <= r.wall_s for r in results)
    body = stubs[0].state.bodies[-1]
    assert body["return_token_ids"] is True and body["prompt"] == prompts[0] and body["max_tokens"] == 8


def test_the_serving_section_of_the_suite_is_validated() -> None:
    from specperf.errors import ConfigError

    for serving, message in (  # each message names the key and the fix
        ({"url": "http://127.0.0.1:1"}, r"missing key 'baseline_url' in 'serving' .*: attaching needs"),
        ({"concurrency": [0]}, "serving.concurrency"),
        ({"request_rate": [-1.0]}, "serving.request_rate"),
        ({"kind": "sglang"}, "kind vllm when specperf starts the servers"),
        ({"concurency": [1]}, "concurrency"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config(dict(SUITE, serving=serving))
    with pytest.raises(ConfigError, match="attaches to one running server, which runs one draft at one k"):
        parse_config(dict(SUITE, k=[2, 4], serving={"url": "http://a:1", "baseline_url": "http://b:1"}))
