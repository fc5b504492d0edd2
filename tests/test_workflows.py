"""The GitHub workflows: they parse, and every pytest/specperf command in them uses options that exist."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from specperf.cli import build_parser

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"
NAMES = ("cpu-tests.yml", "gpu-perf.yml")
_OPTION = re.compile(r"--[A-Za-z0-9][\w-]*")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict), name
    return data


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    return workflow.get("on", workflow.get(True))


def run_scripts(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def commands(script: str) -> list[list[str]]:
    """The script's commands as token lists: continuations joined, comments dropped, split at ;, &&, ||."""
    tokens: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for word in lexer:
            if word in (";", "&&", "||", "|", "(", ")", ">", ">>"):
                tokens.append(current)
                current = []
            else:
                current.append(word)
        tokens.append(current)
    return [t for t in tokens if t]


def invocations(scripts: list[str], program: str) -> list[list[str]]:
    """Each call of ``program`` (also as ``python -m program``) with its arguments."""
    found = []
    for script in scripts:
        for words in commands(script):
            for i, word in enumerate(words):
                if word == program or (word == "-m" and i + 1 < len(words) and words[i + 1] == program):
                    found.append(words[i + 1 + (word == "-m"):])
                    break
    return found


@pytest.fixture(scope="module")
def pytest_options(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every long option ``pytest --help`` lists with the installed plugins (specperf, pytest-benchmark)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                          cwd=tmp_path_factory.mktemp("help"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    options = set(_OPTION.findall(proc.stdout))
    assert {"--specperf-config", "--benchmark-json"} <= options
    return options


@pytest.mark.parametrize("name", NAMES)
def test_workflow_parses(name: str) -> None:
    workflow = load(name)
    assert workflow["jobs"] and triggers(workflow) is not None
    for job in workflow["jobs"].values():
        assert job["runs-on"] and job["steps"]
        assert all("run" in step or "uses" in step for step in job["steps"])


def test_cpu_tests_runs_the_readme_commands() -> None:
    workflow = load("cpu-tests.yml")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    script = "\n".join(run_scripts(workflow))
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in script
    assert 'pip install -e ".[dev]"' in script
    assert ["tests/"] in invocations(run_scripts(workflow), "pytest")


def test_gpu_perf_gates_reports_and_keeps_a_baseline() -> None:
    workflow = load("gpu-perf.yml")
    assert triggers(workflow)["push"]["branches"] == ["main"] and "pull_request" in triggers(workflow)
    (job,) = workflow["jobs"].values()
    assert set(job["runs-on"]) == {"self-hosted", "gpu", "cuda"}
    uses = [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]
    assert {"actions/checkout", "actions/cache/restore", "actions/cache/save", "actions/upload-artifact"} <= set(uses)
    scripts = run_scripts(workflow)
    (bench,) = invocations(scripts, "pytest")
    assert bench[0] == "perf/" and "--specperf-device" in bench and "--benchmark-json" in bench
    subcommands = [words[0] for words in invocations(scripts, "specperf")]
    assert "compare" in subcommands and "report" in subcommands


@pytest.mark.parametrize("name", NAMES)
def test_pytest_options_exist(name: str, pytest_options: set[str]) -> None:
    scripts = run_scripts(load(name))
    # Anywhere in a script, bash arrays of options included.
    named = {opt for script in scripts for opt in _OPTION.findall(script)
             if opt.startswith(("--specperf-", "--benchmark-"))}
    for words in invocations(scripts, "pytest"):
        named |= {word.split("=")[0] for word in words if word.startswith("--")}
    unknown = named - pytest_options
    assert not unknown, f"{name} uses options pytest --help does not list: {sorted(unknown)}"


def subcommand_options() -> dict[str, set[str]]:
    """Subcommand name -> its option strings (argparse offers no public way to list subparsers)."""
    found: dict[str, set[str]] = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = set(sub._option_string_actions)
    return found


@pytest.mark.parametrize("name", NAMES)
def test_specperf_commands_exist(name: str) -> None:
    known = subcommand_options()
    for words in invocations(run_scripts(load(name)), "specperf"):
        assert words and words[0] in known, f"{name}: unknown subcommand in specperf {' '.join(words)}"
        options = {word.split("=")[0] for word in words[1:] if word.startswith("--")}
        assert options <= known[words[0]], f"{name}: specperf {words[0]} has no {sorted(options - known[words[0]])}"
