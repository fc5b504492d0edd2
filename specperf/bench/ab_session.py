"""The coordinator of an in-session A/B comparison: two worker processes (:mod:`specperf.bench.ab_worker`), one per
side, each holding its own checkout's suite, driven round by round.

Two grains (:func:`choose_grain`):

- ``duet``: both sides run each pair's rounds at the same time, each pinned to its own CPUs, the CPUs swapped between
  the sides in ABBA order (Bulej et al., "Duet benchmarking", ICPE 2020). Slowdowns of the machine that both CPUs see
  fall on both rounds of a pair, and a pair costs one round of wall time instead of two. CPU-only, needs two disjoint
  sets of ``threads`` CPUs, and no vLLM case (vLLM binds its own worker threads).
- ``alternate``: one side at a time, A B B A A B ..., so a drift across a block enters adjacent pairs with opposite
  signs. Every other setting (a GPU, too few CPUs, an unset thread count, vLLM).
- ``case`` (asked for only): for verifiers too large for both sides' models to be resident at once. Each pair is one
  whole run of the case by each side, one side at a time in ABBA order, each run a fresh worker narrowed to that
  case (load, warm up, the suite's timed rounds, quit); the pair's figures are each run's median round.

Torch-free: the pytest process coordinates and analyses; the models live in the workers. Every worker this starts
is stopped at :meth:`AbRunner.close`, at interpreter exit, and on a failure, its process group killed if it does
not quit; a worker that dies is reported with the last lines of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specperf.analysis.ab import AbPlan, PairedRounds, Step, WorkDifference, abba_order, compare_work, next_step
from specperf.errors import ConfigError, SpecperfError

log = logging.getLogger(__name__)

PROTOCOL = 1
WORKER_FILE = Path(__file__).resolve().with_name("ab_worker.py")
START_TIMEOUT_S = 900.0  # loading a side's models; a GPU runner's first download may take long
ROUND_TIMEOUT_S = 3600.0  # one request: a worker silent this long is taken as hung
TAIL_LINES = 20


class WorkerDied(SpecperfError):
    """A side's worker exited, hung, or broke the protocol."""


@dataclass(frozen=True)
class SideSpec:
    """How to start one side: its checkout, its Python and its suite, narrowed like this session's."""

    label: str  # "A" (the reference) or "B"
    root: Path  # the checkout whose specperf the worker imports
    python: str  # the interpreter of the side's environment
    config: Path  # the side's suite YAML
    narrowing: tuple[str, ...] = ()  # worker options: --drafts, --k, --slices, --batch, --device, --dtype, ...
    interventions: str | None = None  # a test-only plugin module (tests.plugins.inject_faults)
    pythonpath: tuple[str, ...] = ()  # extra import paths (where that plugin lives)


def _reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # end of stream: the worker exited


class Worker:
    """One side's worker process and its protocol client."""

    def __init__(self, spec: SideSpec, log_dir: Path, append: bool = False) -> None:
        self.spec = spec
        self.log_path = log_dir / f"worker-{spec.label}.log"
        command = [spec.python, str(WORKER_FILE), "--root", str(spec.root), "--config", str(spec.config),
                   *spec.narrowing]
        if spec.interventions:
            command += ["--interventions", spec.interventions]
        env = dict(os.environ)
        if spec.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*spec.pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self._log = self.log_path.open("a" if append else "w")
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                            text=True, env=env, cwd=spec.root, start_new_session=True)
        except OSError as exc:
            self._log.close()
            raise ConfigError(f"side {spec.label}: cannot start {spec.python}: {exc}; fix: pass an existing "
                              "interpreter (--specperf-ab-python)") from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_reader, args=(self.process.stdout, self._lines), daemon=True).start()
        self.hello: dict[str, Any] = {}

    def wait_ready(self) -> None:
        """Wait for the worker's hello: its suite is loaded."""
        self.hello = self._read(START_TIMEOUT_S, "start-up")

    def tail(self) -> str:
        """The last lines of the worker's log (its stderr)."""
        self._log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-TAIL_LINES:]) or "(empty log)"

    def _died(self, what: str) -> WorkerDied:
        code = self.process.poll()
        state = f"exited with status {code}" if code is not None else "stopped answering"
        return WorkerDied(f"side {self.spec.label} ({self.spec.root}): the worker {state} during {what}; the last "
                          f"lines of {self.log_path}:\n{self.tail()}")

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise self._died(what) from None
        if line is None:  # its stdout closed: it is exiting; let it finish, so its status can be told
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            raise self._died(what)
        try:
            message: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise WorkerDied(f"side {self.spec.label}: the worker broke the protocol during {what} (not JSON: "
                             f"{line[:200]!r})") from None
        if message.get("type") == "error":
            raise WorkerDied(f"side {self.spec.label} ({self.spec.root}): {what} failed: {message.get('message')}"
                             f"\n{message.get('traceback', '')}")
        return message

    def send(self, message: dict[str, Any]) -> None:
        """Write one request; :meth:`receive` reads its answer (so that both sides can work at once)."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(_what(message)) from None

    def receive(self, message: dict[str, Any], timeout: float = ROUND_TIMEOUT_S) -> dict[str, Any]:
        """The answer to ``message``, sent before."""
        return self._read(timeout, _what(message))

    def request(self, message: dict[str, Any], timeout: float = ROUND_TIMEOUT_S) -> dict[str, Any]:
        self.send(message)
        return self.receive(message, timeout)

    def close(self) -> None:
        """Ask the worker to quit; kill its process group if it does not within 10 s."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                _kill_group(self.process)
        self._log.close()


def _what(message: dict[str, Any]) -> str:
    return f"{message.get('op')} {message.get('case', '')}".strip()


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class CaseAb:
    """What the A/B measured of one draft case."""

    case_id: str
    step: Step  # the last look: decisions per metric and whether they are final
    a_rounds: list[dict[str, Any]] = field(default_factory=list)  # the worker's round answers, in run order
    b_rounds: list[dict[str, Any]] = field(default_factory=list)
    work: list[WorkDifference] = field(default_factory=list)  # empty when the sides' greedy work is identical
    compared_work: bool = True  # False: the sides' suites differ, so their work may differ by design


def _check_hello(worker: Worker, expected: Sequence[str]) -> None:
    hello, label = worker.hello, worker.spec.label
    if hello.get("type") != "hello" or hello.get("protocol") != PROTOCOL:
        raise ConfigError(f"side {label} ({worker.spec.root}) speaks A/B protocol {hello.get('protocol')!r}, this "
                          f"side {PROTOCOL}; fix: give both sides a specperf whose ab_worker speaks the same version")
    missing = sorted(set(expected) - set(hello.get("cases", [])))
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        raise ConfigError(f"side {label}'s suite ({worker.spec.config}) lacks {len(missing)} of this session's "
                          f"case(s): {shown}; fix: give both sides suites with the same drafts, k, slices and batch "
                          "sizes (or narrow this run with --specperf-drafts/-k/-slice/-batch)")


GRAINS = ("auto", "duet", "alternate", "case")


@dataclass(frozen=True)
class Grain:
    """How a session pairs its rounds, and why."""

    name: str  # "duet" or "alternate"
    reason: str
    cpus: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # duet: the two CPU sets the sides swap between


def _duet_blocker(hellos: Sequence[dict[str, Any]], allow: bool, cpus: Sequence[int]) -> tuple[str, int]:
    """Why the duet grain cannot run ("" if it can), and the CPUs each side needs."""
    threads = [h.get("threads") for h in hellos]
    devices = [str(h.get("device", "")) for h in hellos]
    need = max((t for t in threads if isinstance(t, int)), default=0)
    if not allow:
        return "a vLLM or server case binds its own worker threads", need
    if not sys.platform.startswith("linux"):
        return f"CPU pinning needs Linux, this is {sys.platform}", need
    if any(not d.startswith("cpu") for d in devices):
        return f"a side runs on {', '.join(sorted(set(devices)))}: one accelerator cannot hold two timed rounds", need
    if any(not isinstance(t, int) or t < 1 for t in threads):
        return "a side's torch thread count is unknown (set `threads:` in the suite)", need
    if 2 * need > len(cpus):
        return f"both sides need {need} CPU(s) each and this process may use {len(cpus)}", need
    return "", need


def choose_grain(requested: str, hellos: Sequence[dict[str, Any]], allow_duet: bool = True,
                 cpus: Sequence[int] | None = None) -> Grain:
    """The grain a session runs: ``duet`` when asked for or (``auto``) possible, else ``alternate``. Asking for duet
    where it cannot run is a ConfigError naming why."""
    if requested not in GRAINS:
        raise ConfigError(f"A/B grain {requested!r} is unknown; fix: one of {', '.join(GRAINS)}")
    if requested == "alternate":
        return Grain("alternate", "asked for (--specperf-ab-grain alternate)")
    if requested == "case":
        return Grain("case", "asked for (--specperf-ab-grain case): a fresh worker per side and case run, one side "
                             "at a time, ABBA; only one side's models are loaded at a time")
    available = sorted(os.sched_getaffinity(0)) if cpus is None else sorted(cpus)
    blocker, need = _duet_blocker(hellos, allow_duet, available)
    if blocker:
        if requested == "duet":
            raise ConfigError(f"--specperf-ab-grain duet cannot run: {blocker}; fix: --specperf-ab-grain alternate")
        return Grain("alternate", f"duet cannot run: {blocker}")
    sets = (tuple(available[:need]), tuple(available[need:2 * need]))
    return Grain("duet", f"both sides at once, {need} CPU(s) each, CPUs {sets[0]} and {sets[1]} swapped ABBA", sets)


def _pin(process: subprocess.Popen[str], cpus: tuple[int, ...]) -> None:
    """Pin every thread of a worker (its torch threads too) to ``cpus``; threads it starts later inherit them."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{process.pid}/task")]
    except OSError:
        tids = [process.pid]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(tid, cpus)


class AbRunner:
    """Both sides' workers, started once per session; draft cases measured on command."""

    def __init__(self, a: SideSpec, b: SideSpec, expected_cases: Sequence[str], log_dir: Path,
                 grain: str = "auto", allow_duet: bool = True) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.specs, self.log_dir = {"A": a, "B": b}, log_dir
        self.workers: dict[str, Worker] = {}
        atexit.register(self.close)
        try:
            for spec in (a, b):  # both start at once: their models load side by side
                log.info("specperf A/B: starting side %s (%s, %s)", spec.label, spec.root, spec.python)
                self.workers[spec.label] = Worker(spec, log_dir)
            for worker in self.workers.values():
                worker.wait_ready()
                _check_hello(worker, expected_cases)
            self.grain = choose_grain(grain, [w.hello for w in self.workers.values()], allow_duet)
        except BaseException:
            self.close()
            raise
        log.info("specperf A/B grain: %s (%s)", self.grain.name, self.grain.reason)
        self.hellos = {label: worker.hello for label, worker in self.workers.items()}
        self.same_suite = self.hellos["A"].get("config_hash") == self.hellos["B"].get("config_hash")
        if self.grain.name == "case":  # the hellos checked both suites; no model was loaded: each run starts afresh
            self.close()

    def _case_runs(self, case_id: str, index: int, narrowing: tuple[str, ...], rounds: int,
                   warmup_rounds: int) -> dict[str, dict[str, Any]]:
        """One pair of the case grain: a whole run of the case by each side in turn, each in a fresh worker."""
        answers: dict[str, dict[str, Any]] = {}
        for label, _ in abba_order(index + 1)[-2:]:
            worker = Worker(dataclasses.replace(self.specs[label], narrowing=narrowing), self.log_dir, append=True)
            self.workers[label] = worker
            try:
                worker.wait_ready()
                _check_hello(worker, [case_id])
                for _ in range(warmup_rounds):
                    worker.request({"op": "warmup", "case": case_id})
                answers[label] = median_round([worker.request({"op": "round", "case": case_id})
                                               for _ in range(max(1, rounds))])
            finally:
                worker.close()
                del self.workers[label]
        return answers
    def _pair(self, case_id: str, index: int, op: str = "round") -> dict[str, dict[str, Any]]:
        """One pair's rounds (or warm-ups) of both sides, in the session's grain."""
        message = {"op": op, "case": case_id}
        if self.grain.name == "alternate":
            return {label: self.workers[label].request(message) for label, _ in abba_order(index + 1)[-2:]}
        swap = index % 4 in (1, 2)  # ABBA over the CPU sets: A on the first set at pairs 0, 3, 4, 7, ...
        sets = self.grain.cpus[::-1] if swap else self.grain.cpus
        for label, cpus in zip(("A", "B"), sets):
            _pin(self.workers[label].process, cpus)
        for label in ("A", "B"):
            self.workers[label].send(message)
        answers = {label: self.workers[label].receive(message) for label in ("A", "B")}
        for label, cpus in zip(("A", "B"), sets):
            answers[label]["cpus"] = list(cpus)
        return answers

    def run_case(self, case_id: str, plan: AbPlan, warmup_rounds: int = 1, case_narrowing: tuple[str, ...] = (),
                 rounds_per_run: int = 1) -> CaseAb:
        """Warm both sides up, then run pairs up to each planned look until the case is decided. The case grain
        starts each run's worker with ``case_narrowing`` (its options selecting just this case) and takes the
        median of ``rounds_per_run`` rounds after ``warmup_rounds``."""
        per_case = self.grain.name == "case"
        for i in range(0 if per_case else warmup_rounds):
            self._pair(case_id, i, op="warmup")
        rounds: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        for look in plan.look_sizes:
            while len(rounds["A"]) < look:
                index = len(rounds["A"])
                pair = (self._case_runs(case_id, index, case_narrowing, rounds_per_run, warmup_rounds) if per_case
                        else self._pair(case_id, index))
                for label, answer in pair.items():
                    rounds[label].append(answer)
                log.info("specperf A/B: %s pair %d of at most %d (%s)", case_id, len(rounds["A"]), plan.max_pairs,
                         self.grain.name)
            step = next_step(_paired(case_id, rounds), plan)
            work = self._work(case_id, rounds)
            if step.done or work:  # differing greedy work fails the case whatever the timing says: stop timing it
                break
        return CaseAb(case_id, step, rounds["A"], rounds["B"], work=work, compared_work=self.same_suite)

    def _work(self, case_id: str, rounds: dict[str, list[dict[str, Any]]]) -> list[WorkDifference]:
        """The differences in deterministic work between the sides' first rounds and between their last ones
        (none when the sides run different suites, whose work may differ by design)."""
        if not self.same_suite:
            return []
        first = compare_work(case_id, rounds["A"][0]["spec"], rounds["B"][0]["spec"])
        return first or compare_work(case_id, rounds["A"][-1]["spec"], rounds["B"][-1]["spec"])

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.workers = {}


def median_round(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The round answer whose speculative wall is the median (the lower one of an even count), with the medians of
    both walls: one run's figures in the case grain."""
    ordered = sorted(answers, key=lambda a: a["spec_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    walls = sorted(a["baseline_s"] for a in answers)
    chosen["baseline_s"] = walls[(len(walls) - 1) // 2]
    chosen["run_rounds"] = len(answers)
    return chosen


def _paired(case_id: str, rounds: dict[str, list[dict[str, Any]]]) -> PairedRounds:
    n = min(len(rounds["A"]), len(rounds["B"]))
    a, b = rounds["A"][:n], rounds["B"][:n]
    def speedup(side: list[dict[str, Any]]) -> tuple[float, ...]:
        return tuple(r["baseline_s"] / r["spec_s"] for r in side)

    return PairedRounds(case_id, tuple(r["spec_s"] for r in a), tuple(r["spec_s"] for r in b), speedup(a),
                        speedup(b))
