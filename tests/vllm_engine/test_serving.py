"""Serving mode end to end on this CPU: specperf starts vLLM's OpenAI-compatible server and its twin, drives them at
concurrency 1 and 4 with 16 requests, audits the streamed tokens, reads /metrics and stops every process; then
attaches to servers started here, and refuses bad input with one-line errors. Runs in an environment with vLLM
(.ci/run's second one); skipped elsewhere."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")

from specperf.analysis.contract import ServerInfo  # noqa: E402
from specperf.bench.vllm_cases import StagedModels  # noqa: E402
from specperf.engine.server.launch import PortInUse, ServerError, free_port, start_server, vllm_command  # noqa: E402
from tests.vllm_engine.test_vllm_engine import processes_with  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PERF_TESTS = ROOT / "perf" / "test_speculative.py"
MARK = "SPECPERF_SERVE_TEST_RUN"
K = 3

SUITE = f"""
verifier: embedded:verifier
device: cpu
threads: 1
drafts:
  - {{name: medium, model: embedded:draft-medium, engine: server}}
k: [{K}]
vllm: {{enforce_eager: true, gpu_memory_utilization: 0.1, max_model_len: 512}}
serving:
  concurrency: [1, 4]
  requests: 16
  warmup_requests: 2
  slo: {{ttft_ms: 60000, tpot_ms: 60000}}
dataset: {{source: embedded, slices: ["0:4"]}}
generation: {{max_new_tokens: 24}}
timing: {{breakdown: false}}
thresholds:
  default: {{min_exact_match: 1.0}}
"""
SERVING_KEYS = ("ttft_ms_p50", "ttft_ms_p95", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p95", "tpot_ms_p99",
                "itl_ms_p50", "itl_ms_p95", "itl_ms_p99", "e2el_ms_p50", "e2el_ms_p95", "e2el_ms_p99",
                "chunk_itl_ms_p50", "chunks_per_request_mean", "tokens_per_chunk_mean", "output_tok_s", "request_s",
                "goodput_req_s", "slo_attainment", "tpot_speedup", "throughput_speedup", "server_acceptance_rate",
                "server_mean_acceptance_length", "server_position_acceptance")


def _run(workdir: Path, suite: str, *extra: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess[str], str]:
    (workdir / "suite.yaml").write_text(suite)
    (workdir / "test_perf.py").write_text(PERF_TESTS.read_text())
    marker = uuid.uuid4().hex
    env = {**os.environ, MARK: marker, "OMP_NUM_THREADS": "1"}
    env.pop("VLLM_CPU_OMP_THREADS_BIND", None)  # specperf sets the binding itself
    cmd = [sys.executable, "-m", "pytest", "test_perf.py", "--specperf-config=suite.yaml", "--benchmark-json=b.json",
           "-q", "-p", "no:cacheprovider", *extra]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, marker


def _left_behind(marker: str) -> list[str]:
    deadline = time.monotonic() + 20  # the resource tracker outlives its parent by a moment
    left = processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with(marker)
    return left


def _cases(path: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(path.read_text())
    return {b["extra_info"]["case_id"]: b["extra_info"] for b in doc["benchmarks"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, Any]], list[str], Path]:
    """One pytest run of a serving suite in a child process: its cases, what it left running, its JSON file."""
    workdir = tmp_path_factory.mktemp("serve-run")
    proc, marker = _run(workdir, SUITE)
    assert proc.returncode == 0, f"the serving suite failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    return _cases(workdir / "b.json"), _left_behind(marker), workdir / "b.json"


def test_the_suite_starts_drives_and_stops_both_servers(served: Any) -> None:
    cases, left, _ = served
    assert sorted(cases) == ["baseline-0:4", f"medium-k{K}-0:4-c1", f"medium-k{K}-0:4-c4"]
    assert not left, f"processes left behind: {left}"


def test_greedy_output_through_the_server_equals_the_twins(served: Any) -> None:
    for case_id, info in served[0].items():
        if info["draft"] is not None:
            assert info["exact_match_rate"] == 1.0, case_id
            assert info["engine"] == "server"


def test_every_serving_metric_is_present(served: Any) -> None:
    for case_id, info in served[0].items():
        if info["draft"] is None:
            continue
        assert set(info) == set(ServerInfo.__required_keys__), case_id  # the output contract, key for key
        missing = [key for key in SERVING_KEYS if info.get(key) is None]
        assert not missing, f"{case_id}: null {missing}"
        assert info["completed"] == info["requests"] == 16 and info["failed"] == 0
        assert info["twin_completed"] == 16
        # A speculative chunk carries several accepted tokens; the twin's carry one each.
        assert info["tokens_per_chunk_mean"] > 1.0
        assert info["twin_tokens_per_chunk_mean"] == 1.0


def test_the_servers_counters_equal_the_audit(served: Any) -> None:
    """vLLM's /metrics differences over the timed requests against specperf's teacher-forced replay of the same
    streamed tokens: draft tokens and accepted tokens agree exactly in float32."""
    for case_id, info in served[0].items():
        if info["draft"] is None:
            continue
        assert info["server_acceptance_rate"] == pytest.approx(info["acceptance_aggregate"], abs=1e-12), case_id
        assert info["audit_acceptance_aggregate"] == pytest.approx(info["acceptance_aggregate"], abs=1e-12)
        assert len(info["server_position_acceptance"]) == K


def test_the_report_has_the_serving_section_and_the_crossover(served: Any, tmp_path: Path) -> None:
    from specperf.output.report import report_from_json

    report = report_from_json(served[2], tmp_path).read_text()
    assert "## Serving under load" in report and "serving_speedup.png" in report
    (row,) = json.loads((tmp_path / "serving.json").read_text())["crossovers"]
    assert (row["draft"], row["k"], row["axis"], row["loads"]) == ("medium", K, "concurrency", [1, 4])
    assert "crossover_concurrency" in row and row["sentence"].startswith("medium")
    assert (tmp_path / "serving.csv").read_text().count("\n") == 3  # header and two levels


@pytest.fixture(scope="module")
def running_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A speculative vLLM server and its twin, started here as a user would, for the attach-by-URL path."""
    logs = tmp_path_factory.mktemp("servers")
    staged = StagedModels()
    verifier, draft = staged.location("embedded:verifier"), staged.location("embedded:draft-medium")
    common = dict(python=sys.executable, model_dir=verifier, dtype="float32", host="127.0.0.1", model_name="emb",
                  seed=0, engine_args={"enforce_eager": True, "gpu_memory_utilization": 0.1, "max_model_len": 512},
                  env=[("VLLM_CPU_OMP_THREADS_BIND", "0")])
    spec = start_server(vllm_command(label="attach-spec", port=free_port("127.0.0.1"), speculative={
        "method": "draft_model", "model": draft, "num_speculative_tokens": K}, **common), logs)  # type: ignore[arg-type]
    twin = start_server(vllm_command(label="attach-twin", port=free_port("127.0.0.1"), speculative=None,
                                     **common), logs)  # type: ignore[arg-type]
    try:
        import asyncio

        from specperf.engine.server.client import wait_healthy

        for server in (spec, twin):
            asyncio.run(wait_healthy(server.url, 600, server.alive))
        yield spec.url, twin.url
    finally:
        spec.stop()
        twin.stop()
        staged.cleanup()


def _attached_suite(spec_url: str, twin_url: str, model: str = "emb", loads: str = "[2]") -> str:
    return SUITE.replace("serving:\n", f"serving:\n  url: {spec_url}\n  baseline_url: {twin_url}\n"
                         f"  model_name: {model}\n").replace("concurrency: [1, 4]", f"concurrency: {loads}")


def test_attaching_by_url_measures_the_running_servers(running_servers: tuple[str, str], tmp_path: Path) -> None:
    proc, marker = _run(tmp_path, _attached_suite(*running_servers))
    assert proc.returncode == 0, proc.stdout[-6000:]
    info = _cases(tmp_path / "b.json")[f"medium-k{K}-0:4-c2"]
    assert info["exact_match_rate"] == 1.0
    assert info["server_acceptance_rate"] == pytest.approx(info["acceptance_aggregate"], abs=1e-12)
    assert not _left_behind(marker)


@contextlib.contextmanager
def _serving_cases(suite: str) -> Iterator[tuple[Any, Any]]:
    """The suite's session-level server manager, in process, and its one speculative case; closed on exit (it stops
    what it started and removes its staged models)."""
    import yaml

    from specperf.bench.serving_cases import ServingCases
    from specperf.config import parse_config
    from specperf.config.cases import build_cases

    config = parse_config(yaml.safe_load(suite))
    case = next(case for case in build_cases(config)[0] if case.draft is not None)
    serving = ServingCases(config, "cpu", lambda text: [])
    try:
        yield serving, case
    finally:
        serving.close()


def test_a_server_whose_model_name_differs_is_refused(running_servers: tuple[str, str]) -> None:
    """In process, against the running vLLM servers (an unreachable URL is tested on a stub: test_serving_cases)."""
    with _serving_cases(_attached_suite(*running_servers, model="other")) as (serving, case), \
            pytest.raises(ServerError, match=r"serves emb, not 'other'; fix: set serving.model_name"):
        serving.endpoints(case)


def test_a_port_in_use_is_refused_before_any_server_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the whole-session path of a refused case is the fails-to-start run's."""
    marker = uuid.uuid4().hex
    monkeypatch.setenv(MARK, marker)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with _serving_cases(SUITE.replace("serving:\n", f"serving:\n  port: {port}\n")) as (serving, case), \
                pytest.raises(PortInUse, match=rf"port {port} on 127.0.0.1 is already in use; fix: "):
            serving.endpoints(case)
    assert not processes_with(marker)  # nothing was started


def test_a_server_that_fails_to_start_names_its_log(tmp_path: Path) -> None:
    """An argument vLLM refuses, in a whole session: the case fails with the server's exit status and its last log
    lines, the session exits non-zero, and nothing is left running."""
    suite = SUITE.replace("serving:\n", "serving:\n  server_args: ['--no-such-flag']\n")
    proc, marker = _run(tmp_path, suite)
    assert proc.returncode != 0
    assert "the server did not become healthy" in proc.stdout and "exited with status" in proc.stdout
    assert "no-such-flag" in proc.stdout  # vLLM's own complaint, from the log's tail
    assert not _left_behind(marker)


def test_starting_a_server_without_its_interpreter_is_a_server_error(tmp_path: Path) -> None:
    command = vllm_command(label="missing", python=str(tmp_path / "no-python"), model_dir="x", dtype="float32",
                           host="127.0.0.1", port=free_port("127.0.0.1"), model_name="m", seed=0, engine_args={},
                           speculative=None)
    with pytest.raises(ServerError, match="cannot start"):
        start_server(command, tmp_path)
