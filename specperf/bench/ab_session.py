"""The coordinator of an in-session A/B comparison: two worker processes (:mod:`specperf.bench.ab_worker`), one per
side, each holding its own checkout's suite, driven round by round in ABBA order.

Torch-free: the pytest process coordinates and analyses; the models live in the workers. Every worker this starts
is stopped at :meth:`AbRunner.close`, at interpreter exit, and on a failure, its process group killed if it does
not quit; a worker that dies is reported with the last lines of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
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
    interventions: str | None = None  # a test-only plugin module (perf/inject_faults.py)
    pythonpath: tuple[str, ...] = ()  # extra import paths (where that plugin lives)


def _reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # end of stream: the worker exited


class Worker:
    """One side's worker process and its protocol client."""

    def __init__(self, spec: SideSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"worker-{spec.label}.log"
        command = [spec.python, str(WORKER_FILE), "--root", str(spec.root), "--config", str(spec.config),
                   *spec.narrowing]
        if spec.interventions:
            command += ["--interventions", spec.interventions]
        env = dict(os.environ)
        if spec.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*spec.pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self._log = self.log_path.open("w")
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

    def request(self, message: dict[str, Any], timeout: float = ROUND_TIMEOUT_S) -> dict[str, Any]:
        what = f"{message.get('op')} {message.get('case', '')}".strip()
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(what) from None
        return self._read(timeout, what)

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


class AbRunner:
    """Both sides' workers, started once per session; draft cases measured on command."""

    def __init__(self, a: SideSpec, b: SideSpec, expected_cases: Sequence[str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.workers: dict[str, Worker] = {}
        atexit.register(self.close)
        try:
            for spec in (a, b):  # both start at once: their models load side by side
                log.info("specperf A/B: starting side %s (%s, %s)", spec.label, spec.root, spec.python)
                self.workers[spec.label] = Worker(spec, log_dir)
            for worker in self.workers.values():
                worker.wait_ready()
                _check_hello(worker, expected_cases)
        except BaseException:
            self.close()
            raise
        self.same_suite = self.workers["A"].hello.get("config_hash") == self.workers["B"].hello.get("config_hash")

    def _round(self, label: str, case_id: str) -> dict[str, Any]:
        return self.workers[label].request({"op": "round", "case": case_id})

    def run_case(self, case_id: str, plan: AbPlan, warmup_rounds: int = 1) -> CaseAb:
        """Warm both sides up, then run ABBA-ordered rounds up to each planned look until the case is decided."""
        for _ in range(warmup_rounds):
            for label in ("A", "B"):
                self.workers[label].request({"op": "warmup", "case": case_id})
        order = abba_order(plan.max_pairs)
        rounds: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        done = 0
        for look in plan.look_sizes:
            while done < len(order) and min(len(rounds["A"]), len(rounds["B"])) < look:
                label, _ = order[done]
                rounds[label].append(self._round(label, case_id))
                log.info("specperf A/B: %s round %d of side %s", case_id, len(rounds[label]), label)
                done += 1
            step = next_step(_paired(case_id, rounds), plan)
            if step.done:
                break
        ab = CaseAb(case_id, step, rounds["A"], rounds["B"], compared_work=self.same_suite)
        if self.same_suite:
            ab.work = compare_work(case_id, rounds["A"][-1]["spec"], rounds["B"][-1]["spec"])
        return ab

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.workers = {}


def _paired(case_id: str, rounds: dict[str, list[dict[str, Any]]]) -> PairedRounds:
    n = min(len(rounds["A"]), len(rounds["B"]))
    a, b = rounds["A"][:n], rounds["B"][:n]
    def speedup(side: list[dict[str, Any]]) -> tuple[float, ...]:
        return tuple(r["baseline_s"] / r["spec_s"] for r in side)

    return PairedRounds(case_id, tuple(r["spec_s"] for r in a), tuple(r["spec_s"] for r in b), speedup(a),
                        speedup(b))
