"""Offline mode belongs to the tests alone: `pytest perf/` honours the caller's hub settings and can download.

The root conftest.py loads for `pytest tests/` and `pytest perf/` alike, so it must set no hub switch; tests/conftest.py
forces offline mode for the test suite. On a GPU runner with an empty HF cache, the perf suite's first run downloads
the models: that only works if nothing in the suite turns offline mode on behind the caller's back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import specperf
from specperf.bench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# A test-only plugin for the child pytest: after collection (every conftest loaded, the perf module imported) it
# writes the hub switches it sees, and what huggingface_hub reads from them, to $ENV_DUMP.
DUMP_PLUGIN = f'''
import json, os

SWITCHES = {SWITCHES!r}

def pytest_collection_finish(session):
    import huggingface_hub.constants as hub
    seen = {{name: os.environ.get(name) for name in SWITCHES}}
    seen["huggingface_hub offline"] = bool(hub.HF_HUB_OFFLINE)
    seen["collected"] = len(session.items)
    with open(os.environ["ENV_DUMP"], "w") as out:
        json.dump(seen, out)
'''
# A suite whose verifier is a hub id that exists nowhere; the prompt-lookup drafter needs no second model.
HUB_SUITE = """
verifier: no-such-org/no-such-model
device: cpu
threads: 1
drafts:
  - name: lookup
    drafter: prompt-lookup
k: [2]
dataset:
  source: embedded
  slices: ["0:1"]
generation:
  max_new_tokens: 4
timing:
  rounds: 1
  warmup_rounds: 0
"""


def _callers_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without the hub switches tests/conftest.py forced, plus ``settings``; an empty
    HF_HOME, so nothing can come from a cache."""
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES and k != "PYTEST_ADDOPTS"}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), **settings}


def _collect_perf(tmp_path: Path, env: dict[str, str]) -> dict[str, object]:
    """`pytest perf/ --collect-only` from the repository root, as a user runs it; the switches the dump plugin saw."""
    (tmp_path / "envdump.py").write_text(DUMP_PLUGIN)
    dump = tmp_path / "env.json"
    env = {**env, "ENV_DUMP": str(dump), "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "perf/", "--collect-only", "-q", "-p", "envdump",
                           "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen: dict[str, object] = json.loads(dump.read_text())
    assert isinstance(seen["collected"], int) and seen["collected"] > 0, "the perf suite collected nothing"
    return seen


@pytest.mark.slow
def test_the_perf_suite_sets_no_offline_switch(tmp_path: Path) -> None:
    seen = _collect_perf(tmp_path, _callers_env(tmp_path))
    assert {name: seen[name] for name in SWITCHES} == dict.fromkeys(SWITCHES)
    assert seen["huggingface_hub offline"] is False


@pytest.mark.slow
def test_the_perf_suite_keeps_the_callers_offline_switches(tmp_path: Path) -> None:
    seen = _collect_perf(tmp_path, _callers_env(tmp_path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="0"))
    assert seen["HF_HUB_OFFLINE"] == "1" and seen["HF_DATASETS_OFFLINE"] == "0"
    assert seen["huggingface_hub offline"] is True


def test_the_tests_run_offline() -> None:
    """tests/conftest.py set both switches before huggingface_hub was imported, so the hub library itself is offline."""
    import huggingface_hub.constants as hub

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert hub.HF_HUB_OFFLINE is True


class _NoSuchRepo(BaseHTTPRequestHandler):
    """A stand-in hub that knows no repository, and records what it was asked."""

    asked: list[str] = []

    def _missing(self) -> None:
        self.asked.append(self.path)
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _missing

    def log_message(self, *args: object) -> None:  # quiet: the test reads ``asked``
        pass


@pytest.fixture
def stand_in_hub() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server answering 404 to every request: (its URL, the paths asked); stopped at teardown."""
    asked: list[str] = []
    handler = type("Handler", (_NoSuchRepo,), {"asked": asked})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.slow
def test_without_offline_switches_the_perf_suite_asks_the_hub(tmp_path: Path,
                                                              stand_in_hub: tuple[str, list[str]]) -> None:
    """What a GPU runner's first run does: with the switches unset and an empty cache, `pytest perf/` asks the hub
    (here a stand-in that has no such model), and the error says so, not that offline mode is on."""
    url, asked = stand_in_hub
    (tmp_path / "suite.yaml").write_text(HUB_SUITE)
    env = _callers_env(tmp_path, HF_ENDPOINT=url, OMP_NUM_THREADS="1", COLUMNS="400")
    proc = subprocess.run([sys.executable, "-m", "pytest", "perf/", f"--specperf-config={tmp_path / 'suite.yaml'}",
                           "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--benchmark-disable"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert any("no-such-org/no-such-model" in path for path in asked), asked
    assert "model 'no-such-org/no-such-model' is not available" in output, output[-3000:]
    assert "the hub could not be reached or has no such model" in output and "offline mode is on" not in output


def test_in_offline_mode_the_advice_is_to_unset_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as tests/conftest.py made it
    monkeypatch.setenv("HF_HOME", "/nowhere/hf-home")
    with pytest.raises(specperf.ModelError) as info:
        load_model("no-such-org/no-such-model-xyz", device="cpu")
    message = str(info.value)
    assert "offline mode is on" in message and "unset HF_HUB_OFFLINE" in message
    assert "downloads it into /nowhere/hf-home" in message
