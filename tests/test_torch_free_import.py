"""specperf must cost (almost) nothing where it decodes nothing: torch and transformers stay unimported.

The pytest11 entry point loads the plugin into every pytest run of an environment with specperf installed, and
``specperf compare`` / ``specperf report`` run in CI jobs that have no use for a model. Importing torch takes
seconds, so each check below runs in a fresh interpreter (this process has long imported torch through other
tests) and reads ``sys.modules`` at the end. tests/test_layout.py checks the same statically; this checks what
really happens, including imports inside functions that those commands call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Its benchmark-file builder is the one the start-up measurement uses.
from tools import startup

# End to end: every test here runs a fresh interpreter.
pytestmark = pytest.mark.slow

MARKER = "SPECPERF-TORCH-FREE "
HEAVY = ("torch", "transformers")
# Appended to every snippet: one line with the verdict, so pytest's and the CLI's own output cannot be mistaken for it.
REPORT = f"""
import json as _json, sys as _sys
_state = dict(globals().get("state", {{}}))
_state.update({{name: name in _sys.modules for name in {HEAVY!r}}})
print({MARKER!r} + _json.dumps(_state), flush=True)
"""


def _environment() -> dict[str, str]:
    """Plugin autoload on (whatever the caller's shell says), no extra options, no network."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def run_fresh(code: str, cwd: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``code`` in a fresh interpreter; return the marker line's state (``state`` dict of the snippet plus
    whether each heavy module was imported) and the finished process."""
    proc = subprocess.run([sys.executable, "-c", code + REPORT], cwd=cwd, env=_environment(), capture_output=True,
                          text=True, timeout=120, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert lines, f"no verdict line (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len(MARKER):]), proc


def assert_torch_free(state: dict[str, Any], proc: subprocess.CompletedProcess[str]) -> None:
    loaded = [name for name in HEAVY if state[name]]
    assert not loaded, f"{', '.join(loaded)} imported:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.fixture
def bench_file(tmp_path: Path) -> Path:
    return startup.write_bench_json(tmp_path / "bench.json")


# =========================================================================== pytest with the plugin autoloaded


def test_pytest_help_is_torch_free(tmp_path: Path) -> None:
    code = """
import contextlib, io, pytest
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = pytest.main(["--help", "-p", "no:cacheprovider"])
state = {"rc": int(rc), "plugin_options": "--specperf-config" in out.getvalue()}
"""
    state, proc = run_fresh(code, tmp_path)
    assert state["rc"] == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert state["plugin_options"], "pytest --help does not list --specperf-config: the plugin did not load"
    assert_torch_free(state, proc)


def test_pytest_run_of_another_project_is_torch_free(tmp_path: Path) -> None:
    """A project that does not use specperf: the plugin is registered (autoloaded) and torch stays out."""
    (tmp_path / "test_trivial.py").write_text(startup.TRIVIAL_TEST)
    code = """
import pytest
state = {}
class Probe:
    def pytest_unconfigure(self, config):
        state["registered"] = config.pluginmanager.has_plugin("specperf")
rc = pytest.main(["-q", "-p", "no:cacheprovider", "test_trivial.py"], plugins=[Probe()])
state["rc"] = int(rc)
"""
    state, proc = run_fresh(code, tmp_path)
    assert state["rc"] == 0, f"pytest failed in a project without specperf:\n{proc.stdout[-3000:]}"
    assert state.get("registered"), "the specperf plugin was not autoloaded through its pytest11 entry point"
    assert_torch_free(state, proc)


# =========================================================================== the specperf command line


def _cli(argv: list[str], cwd: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    code = f"""
from specperf.cli import main
try:
    rc = main({argv!r})
except SystemExit as exc:
    rc = exc.code
state = {{"rc": rc}}
"""
    return run_fresh(code, cwd)


def test_cli_help_is_torch_free(tmp_path: Path) -> None:
    state, proc = _cli(["--help"], tmp_path)
    assert state["rc"] == 0 and "compare" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_torch_free(state, proc)


def test_cli_compare_is_torch_free(tmp_path: Path, bench_file: Path) -> None:
    new = startup.write_bench_json(tmp_path / "new.json")
    state, proc = _cli(["compare", str(bench_file), str(new)], tmp_path)
    assert state["rc"] == 0, f"compare of two equal runs exited {state['rc']}:\n{proc.stdout[-2000:]}{proc.stderr}"
    assert startup.DRAFT_ID in proc.stdout
    assert_torch_free(state, proc)


def test_cli_report_is_torch_free(tmp_path: Path, bench_file: Path) -> None:
    out = tmp_path / "report"
    state, proc = _cli(["report", str(bench_file), "--out", str(out)], tmp_path)
    assert state["rc"] == 0, f"report exited {state['rc']}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert (out / "report.md").is_file()
    assert_torch_free(state, proc)


# =========================================================================== the lazy public API


def test_import_specperf_is_lazy_both_ways(tmp_path: Path) -> None:
    """``import specperf`` loads no engine; ``specperf.decode`` does (else the laziness would be a stub)."""
    code = """
import sys
import specperf
names = list(specperf.__all__)
state = {"after_import": {name: name in sys.modules for name in ("torch", "transformers")}}
decode = specperf.decode
state["decode_is_callable"] = callable(decode)
state["torch_after_decode"] = "torch" in sys.modules
"""
    state, _ = run_fresh(code, tmp_path)
    assert not any(state["after_import"].values()), f"import specperf imported {state['after_import']}"
    assert state["decode_is_callable"]
    assert state["torch_after_decode"], "specperf.decode did not load the engine (torch)"
