"""The client of an OpenAI-compatible server: streamed completions timed chunk by chunk, model listing, /metrics and
readiness.

A completion is one ``POST /v1/completions`` with ``stream: true``, read as server-sent events through
``httpx_sse``. The JSON it relies on is vLLM's (``vllm/entrypoints/openai/completion/serving.py``,
``completion_stream_generator``, and ``.../completion/protocol.py``): each chunk has ``choices[0]`` with ``text``,
``finish_reason`` and, with ``return_token_ids``, ``token_ids`` (the delta tokens); with
``stream_options.continuous_usage_stats`` each chunk also has a cumulative ``usage``; a final chunk with
``choices: []`` carries the total ``usage`` and, when the server runs with ``--per-request-spec-decode-metrics``,
``metrics.speculative_decoding``; an error during generation is sent as an ``{"error": {...}}`` event; the stream
ends with ``data: [DONE]``. Other OpenAI-compatible servers that leave out the vLLM extensions still work: tokens
per chunk then come from the usage counts, or count one per chunk.

:func:`stream_completion` never raises for what the server or the network does: a failed request comes back with
``timing.ok`` False and a one-line ``timing.error`` that names the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from specperf.analysis.serving import RequestTiming
from specperf.errors import SpecperfError

log = logging.getLogger(__name__)

DONE = "[DONE]"
HEALTH_POLL_S = 0.5  # how often wait_healthy asks
HEALTH_PROBE_TIMEOUT_S = 5.0  # the longest one readiness probe may take
ERROR_BODY_CHARS = 300  # how much of a non-JSON error body goes into a message


class ServerNotReady(SpecperfError):
    """The server did not answer its health check in time, or its process exited while we waited."""


@dataclass(frozen=True)
class Completion:
    """One streamed completion: its timing, its tokens, and the server's per-request speculative counters."""

    timing: RequestTiming  # ok / error, TTFT, latency and chunk timings (partial as far as they got when not ok)
    token_ids: tuple[int, ...] | None  # the output tokens when every output chunk carried them (vLLM return_token_ids)
    text: str  # the streamed text, concatenated
    finish_reason: str | None  # of the last choice that had one ("length", "stop", ...)
    spec: dict[str, Any] | None  # vLLM's per-request `metrics.speculative_decoding` object as sent, else None


@dataclass
class _Stream:
    """What one stream has delivered so far; filled event by event, read once at the end."""

    prompt_len: int
    sent: float  # perf_counter at send
    events: int = 0  # JSON chunks received
    times: list[float] = field(default_factory=list)  # perf_counter of each output-carrying chunk
    tokens: list[int] = field(default_factory=list)  # output tokens of each output-carrying chunk
    token_ids: list[int] | None = field(default_factory=list)  # None once an output chunk came without token_ids
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int | None = None  # the latest usage.completion_tokens
    prompt_tokens: int | None = None  # the latest usage.prompt_tokens
    spec: dict[str, Any] | None = None
    done: bool = False  # [DONE] arrived
    error: str | None = None  # the server's error event, or an unreadable chunk


def request_body(
    model: str, prompt: list[int], *, max_tokens: int, temperature: float, seed: int | None, ignore_eos: bool
) -> dict[str, Any]:
    """The JSON body of a streamed completion of token ids ``prompt``, asking for usage on every chunk and the
    output token ids (vLLM extensions other servers ignore); ``seed`` only when given."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "return_token_ids": True,
        "ignore_eos": ignore_eos,
    }
    if seed is not None:
        body["seed"] = seed
    return body


async def stream_completion(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    prompt: list[int],
    *,
    index: int,
    max_tokens: int,
    temperature: float,
    seed: int | None,
    ignore_eos: bool,
    level_start: float,
    timeout_s: float,
) -> Completion:
    """Stream one completion of the token ids ``prompt`` from the server at ``url`` (``http://host:port``) and time
    it on ``time.perf_counter()``: ``sent_s`` is the send time minus ``level_start``, TTFT and latency run from the
    send to the first and last output-carrying chunk. ``timeout_s`` bounds the whole request, send to ``[DONE]``.

    Never raises for a failed request: an HTTP error status, a connection error, a timeout, an error event, an
    unreadable chunk, a stream without ``[DONE]`` or without output all give ``timing.ok`` False and
    ``timing.error`` naming request ``index`` and what happened. Cancellation propagates.
    """
    body = request_body(
        model, prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, ignore_eos=ignore_eos
    )
    state = _Stream(prompt_len=len(prompt), sent=time.perf_counter())
    try:
        status_error = await asyncio.wait_for(_read_stream(client, url, body, state, timeout_s), timeout_s)
    except asyncio.TimeoutError:
        failure: str | None = f"timed out after {timeout_s:g} s ({state.events} chunks received)"
    except httpx.TimeoutException as exc:
        failure = f"timed out ({type(exc).__name__}) after {state.events} chunks"
    except httpx.HTTPError as exc:
        failure = _transport_failure(exc, url, state.events)
    else:
        failure = status_error or state.error or _end_failure(state)
    return _completion(state, index=index, level_start=level_start, failure=failure)


async def _read_stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], state: _Stream, timeout_s: float
) -> str | None:
    """Send ``body`` and feed each event into ``state`` until ``[DONE]``, an error event or the end of the stream.
    Returns the failure of a non-200 status (the server's message), else None; transport errors propagate."""
    endpoint = f"{url.rstrip('/')}/v1/completions"
    async with aconnect_sse(client, "POST", endpoint, json=body, timeout=timeout_s) as source:
        if source.response.status_code != httpx.codes.OK:
            await source.response.aread()
            return _status_failure(source.response)
        async for event in source.aiter_sse():
            arrived = time.perf_counter()
            if event.data.strip() == DONE:
                state.done = True
                return None
            _take_event(state, event.data, arrived)
            if state.error is not None:
                return None
    return None


def _take_event(state: _Stream, data: str, arrived: float) -> None:
    """Record one JSON chunk that arrived at ``arrived``; an error event or non-JSON sets ``state.error``."""
    state.events += 1
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        state.error = f"chunk {state.events} is not JSON: {data[:80]!r}"
        return
    if not isinstance(chunk, dict):
        state.error = f"chunk {state.events} is not a JSON object: {data[:80]!r}"
        return
    if "error" in chunk:
        state.error = f"the server sent an error after {state.events - 1} chunks: {_error_message(chunk)}"
        return
    increase = _take_usage(state, chunk.get("usage"))
    _take_spec(state, chunk.get("metrics"))
    choices = chunk.get("choices") or []
    if choices and isinstance(choices[0], dict):
        _take_choice(state, choices[0], increase, arrived)


def _take_usage(state: _Stream, usage: Any) -> int | None:
    """Record a chunk's ``usage``; returns the increase of ``completion_tokens`` since the last usage seen (None
    when this chunk has no count)."""
    if not isinstance(usage, dict):
        return None
    if isinstance(usage.get("prompt_tokens"), int):
        state.prompt_tokens = usage["prompt_tokens"]
    count = usage.get("completion_tokens")
    if not isinstance(count, int):
        return None
    increase = count - (state.completion_tokens or 0)
    state.completion_tokens = count
    return increase


def _take_spec(state: _Stream, metrics: Any) -> None:
    """Keep ``metrics.speculative_decoding`` when the chunk has it (vLLM: the final usage chunk only)."""
    if isinstance(metrics, dict) and isinstance(metrics.get("speculative_decoding"), dict):
        state.spec = metrics["speculative_decoding"]


def _take_choice(state: _Stream, choice: dict[str, Any], usage_increase: int | None, arrived: float) -> None:
    """Record ``choices[0]`` of a chunk: its finish reason, and when it carries output (non-empty ``text`` or
    ``token_ids``) its arrival, tokens and text."""
    if choice.get("finish_reason") is not None:
        state.finish_reason = str(choice["finish_reason"])
    text = choice.get("text") or ""
    ids = choice.get("token_ids") or []
    if not text and not ids:
        return
    state.times.append(arrived)
    state.text.append(str(text))
    if ids:
        state.tokens.append(len(ids))
    elif usage_increase is not None:
        state.tokens.append(usage_increase)
    else:
        state.tokens.append(1)
    if not ids:
        state.token_ids = None
    elif state.token_ids is not None:
        state.token_ids.extend(int(t) for t in ids)


def _end_failure(state: _Stream) -> str | None:
    """Why a stream that ended without an error event failed: no ``[DONE]``, or no output at all; else None."""
    if not state.done:
        return f"the stream ended after {state.events} chunks without [DONE] (server closed the connection)"
    if not state.times:
        return f"the stream finished after {state.events} chunks without any output"
    return None


def _status_failure(response: httpx.Response) -> str:
    """A one-line failure for a non-200 response: the status and the server's error message."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        message = _error_message(payload)
    else:
        message = " ".join(response.text.split())[:ERROR_BODY_CHARS] or "(empty body)"
    return f"HTTP {response.status_code} {response.reason_phrase}: {message}"


def _error_message(payload: dict[str, Any]) -> str:
    """The message of an OpenAI-style ``{"error": {"message", "type", "code"}}`` (or ``{"error": "text"}``)."""
    error = payload["error"]
    if not isinstance(error, dict):
        return " ".join(str(error).split())
    message = " ".join(str(error.get("message", "")).split()) or "(no message)"
    kind = ", ".join(str(error[key]) for key in ("type", "code") if error.get(key) is not None)
    return f"{message} ({kind})" if kind else message


def _transport_failure(exc: httpx.HTTPError, url: str, events: int) -> str:
    """A one-line failure for a connection that could not be made or broke."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: {detail}"
    return f"the connection broke after {events} chunks: {detail} ({type(exc).__name__})"


def _completion(state: _Stream, *, index: int, level_start: float, failure: str | None) -> Completion:
    """The completion ``state`` describes; ``failure`` (without the request prefix) makes it not ok."""
    times = state.times
    timing = RequestTiming(
        index=index,
        ok=failure is None,
        error=None if failure is None else f"request {index}: {failure}",
        sent_s=state.sent - level_start,
        ttft_s=times[0] - state.sent if times else None,
        latency_s=times[-1] - state.sent if times else None,
        chunk_gaps_s=tuple(later - earlier for earlier, later in zip(times, times[1:])),
        chunk_tokens=tuple(state.tokens),
        output_tokens=state.completion_tokens if state.completion_tokens is not None else sum(state.tokens),
        prompt_tokens=state.prompt_tokens if state.prompt_tokens is not None else state.prompt_len,
    )
    return Completion(
        timing=timing,
        token_ids=tuple(state.token_ids) if state.token_ids is not None and times else None,
        text="".join(state.text),
        finish_reason=state.finish_reason,
        spec=state.spec,
    )


async def list_models(client: httpx.AsyncClient, url: str) -> list[str]:
    """The ids of the models the server at ``url`` serves (``GET /v1/models``). Raises ``httpx.HTTPError`` when
    the server cannot be reached or answers with an error status."""
    response = await client.get(f"{url.rstrip('/')}/v1/models")
    response.raise_for_status()
    return [str(entry["id"]) for entry in response.json().get("data", [])]


async def get_metrics_text(client: httpx.AsyncClient, url: str) -> str | None:
    """The Prometheus text of the server's ``GET /metrics``; None when the server has no such endpoint (404) or
    cannot be reached. Any other error status raises ``httpx.HTTPStatusError``."""
    try:
        response = await client.get(f"{url.rstrip('/')}/metrics")
    except httpx.TransportError as exc:
        log.debug("GET %s/metrics failed: %s", url, exc)
        return None
    if response.status_code == httpx.codes.NOT_FOUND:
        return None
    response.raise_for_status()
    return response.text


async def wait_healthy(url: str, timeout_s: float, is_alive: Callable[[], bool]) -> None:
    """Return once the server at ``url`` answers 200 on ``GET /health`` or ``GET /v1/models``, asking every
    HEALTH_POLL_S seconds. Raises ServerNotReady when ``timeout_s`` passes first, or as soon as ``is_alive()``
    (the server process's liveness; ``lambda: True`` for a server not started here) returns False."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    async with httpx.AsyncClient() as client:
        while True:
            if not is_alive():
                raise ServerNotReady(f"the server process exited before {url} became healthy (last probe: {last})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerNotReady(f"the server at {url} did not become healthy within {timeout_s:g} s ({last})")
            healthy, last = await _probe(client, url, min(HEALTH_PROBE_TIMEOUT_S, remaining))
            if healthy:
                log.debug("%s is healthy", url)
                return
            await asyncio.sleep(min(HEALTH_POLL_S, max(0.0, deadline - time.monotonic())))


async def _probe(client: httpx.AsyncClient, url: str, timeout_s: float) -> tuple[bool, str]:
    """Ask ``/health`` then ``/v1/models`` once; returns (either answered 200, what the last one said)."""
    said = ""
    for path in ("/health", "/v1/models"):
        try:
            response = await client.get(f"{url.rstrip('/')}{path}", timeout=timeout_s)
        except httpx.HTTPError as exc:
            said = f"GET {path}: {type(exc).__name__}"
            continue
        if response.status_code == httpx.codes.OK:
            return True, f"GET {path}: 200"
        said = f"GET {path}: HTTP {response.status_code}"
    return False, said
