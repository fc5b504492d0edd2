"""A small real HTTP server in a thread that speaks the OpenAI completions streaming protocol the way vLLM does
(``vllm/entrypoints/openai/completion/serving.py``): chunked ``text/event-stream`` responses of ``data: {...}`` events
with ``token_ids`` (several per chunk), cumulative ``usage`` on every chunk, a final usage chunk with
``metrics.speculative_decoding``, then ``data: [DONE]``.

The first token id of the prompt picks a behaviour (the ``Variant`` constants); any other id streams normally. The
stub records every request body and the most completion requests it saw in flight at once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNK_SIZES = (1, 3, 2, 2)  # output tokens per chunk, cycled
FIRST_TOKEN = 1000  # output token i is FIRST_TOKEN + i
CHUNK_SLEEP_S = 0.005
SPEC = {
    "mean_acceptance_length": 2.5,
    "draft_acceptance_rate": 0.5,
    "acceptance_histogram": [1, 0, 1, 0, 1],
    "num_spec_steps": 3,
    "num_accepted_draft_tokens": 6,
    "num_draft_tokens": 12,
    "num_spec_tokens": 4,
}


class Variant:
    """Behaviours, chosen by the prompt's first token id."""

    NORMAL = 1
    HTTP_ERROR = 2  # 400 with vLLM's JSON error body
    ERROR_EVENT = 3  # an {"error": ...} event after two chunks, then [DONE] (as vLLM sends it)
    DROP = 4  # the connection dropped after two chunks, mid chunked body
    USAGE_ONLY = 5  # no token_ids; continuous usage counts the tokens
    NO_USAGE = 6  # neither token_ids nor usage
    NO_DONE = 7  # a complete body whose last event is not [DONE]
    STALL = 8  # nothing for STALL_S seconds
    SLOW = 9  # like NORMAL, each chunk SLOW_SLEEP_S apart (for the concurrency test)


STALL_S = 2.0
SLOW_SLEEP_S = 0.02
ERROR_MESSAGE = "This model's maximum context length is 1024 tokens."


@dataclass
class StubState:
    """What the stub has seen; read by the tests."""

    healthy: bool = True  # /health and /v1/models answer 200 (else 503)
    health_endpoint: bool = True  # /health exists (else 404, readiness then rests on /v1/models)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


def output_chunks(max_tokens: int) -> list[list[int]]:
    """The token ids of each chunk of a normal stream of ``max_tokens`` tokens."""
    chunks: list[list[int]] = []
    produced = 0
    while produced < max_tokens:
        size = min(CHUNK_SIZES[len(chunks) % len(CHUNK_SIZES)], max_tokens - produced)
        chunks.append([FIRST_TOKEN + produced + j for j in range(size)])
        produced += size
    return chunks


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked bodies and keep-alive, as uvicorn serves vLLM
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the tests read the stub's state, not its log."""

    # --- GET ------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/health" and state.health_endpoint:
            self._send_json(200 if state.healthy else 503, {})
        elif self.path == "/v1/models":
            payload = {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}
            self._send_json(200 if state.healthy else 503, payload)
        else:
            self._send_json(404, {"detail": "Not Found"})

    # --- POST /v1/completions ---------------------------------------------------------------------------------
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        variant = body["prompt"][0]
        if variant == Variant.HTTP_ERROR:
            error = {"message": ERROR_MESSAGE, "type": "BadRequestError", "param": None, "code": 400}
            self._send_json(400, {"error": error})
            return
        state = self.server.state
        state.enter(body)
        self._left = False
        try:
            self._stream(body, variant)
        finally:
            self._leave()

    def _leave(self) -> None:
        """Count this request out of flight, once. Called before the last event goes out: the client frees its
        slot only after reading it, so a new request is never counted beside one that is finishing."""
        if not self._left:
            self._left = True
            self.server.state.leave()

    def _stream(self, body: dict[str, Any], variant: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if variant == Variant.STALL:
            self._leave()
            time.sleep(STALL_S)
            self.close_connection = True
            return
        sleep = SLOW_SLEEP_S if variant == Variant.SLOW else CHUNK_SLEEP_S
        chunks = output_chunks(int(body["max_tokens"]))
        sent = 0
        for number, ids in enumerate(chunks):
            if variant == Variant.DROP and number == 2:
                self._leave()
                self._drop()
                return
            if variant == Variant.ERROR_EVENT and number == 2:
                self._leave()
                error = {"message": "Internal server error", "type": "InternalServerError", "param": None,
                         "code": 500}
                self._event({"error": error})
                self._finish(done=True)
                return
            time.sleep(sleep)
            sent += len(ids)
            finish = "length" if number == len(chunks) - 1 else None
            self._event(self._chunk(body, variant, ids, sent, finish, first=number == 0))
        self._leave()
        if variant not in (Variant.NO_USAGE,):
            self._event(self._usage_chunk(body, sent))
        self._finish(done=variant != Variant.NO_DONE)

    def _chunk(
        self, body: dict[str, Any], variant: int, ids: list[int], sent: int, finish: str | None, *, first: bool
    ) -> dict[str, Any]:
        """One vLLM completion chunk carrying ``ids``."""
        choice: dict[str, Any] = {"index": 0, "text": "".join(f"t{t} " for t in ids), "logprobs": None,
                                  "finish_reason": finish, "stop_reason": None}
        if variant not in (Variant.USAGE_ONLY, Variant.NO_USAGE):
            choice["token_ids"] = ids
            if first:
                choice["prompt_token_ids"] = body["prompt"]
        chunk: dict[str, Any] = {"id": "cmpl-stub", "object": "text_completion", "created": 0,
                                 "model": body["model"], "choices": [choice]}
        if variant != Variant.NO_USAGE:
            prompt = len(body["prompt"])
            chunk["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt + sent, "completion_tokens": sent}
        return chunk

    def _usage_chunk(self, body: dict[str, Any], sent: int) -> dict[str, Any]:
        """vLLM's final usage chunk: no choices, total usage, per-request metrics."""
        prompt = len(body["prompt"])
        return {"id": "cmpl-stub", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [], "usage": {"prompt_tokens": prompt, "total_tokens": prompt + sent,
                                         "completion_tokens": sent},
                "metrics": {"speculative_decoding": SPEC}}

    # --- wire ---------------------------------------------------------------------------------------------------
    def _event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _finish(self, *, done: bool) -> None:
        if done:
            self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the socket mid-body: the chunked body never gets its terminating chunk."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(2)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StubServer(ThreadingHTTPServer):
    """The stub, bound to 127.0.0.1 on a free port."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = StubState()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that hang up (the client closes a connection whose body it did not finish)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def running_stub() -> Iterator[StubServer]:
    """A stub serving in a background thread, shut down and closed on exit."""
    server = StubServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
