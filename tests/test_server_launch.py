"""Server processes die with the session: stop() ends the whole process group, and a SIGTERM to the process that
started them stops them before it dies. A stand-in server (a sleeping Python process and its child) keeps these
tests cheap; the vLLM tests start real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from specperf.engine.server.launch import (
    PortInUse,
    ServerCommand,
    check_port,
    free_port,
    start_server,
    vllm_command,
)

# A "server" that starts a child of its own, as vLLM's API server starts its engine core, and prints both pids.
SLEEPER = ("import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
           "'import time; time.sleep(120)']); print(os.getpid(), child.pid, flush=True); time.sleep(120)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def _pids(log: Path) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if text.strip():
            return [int(p) for p in text.split()]
        time.sleep(0.05)
    raise AssertionError(f"the stand-in server wrote no pids to {log}")


def _command(label: str) -> ServerCommand:
    return ServerCommand(label, (sys.executable, "-c", SLEEPER), "127.0.0.1", free_port("127.0.0.1"), "m")


def test_stop_ends_the_server_and_its_children(tmp_path: Path) -> None:
    server = start_server(_command("stand-in"), tmp_path)
    main, child = _pids(server.log_path)
    server.stop()
    assert not _alive(main) and not _alive(child)
    server.stop()  # idempotent


def test_a_sigterm_stops_the_servers_before_the_process_dies(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from tests.test_server_launch import _command
        from specperf.engine.server.launch import start_server
        server = start_server(_command("stand-in"), Path({str(tmp_path)!r}))
        print(server.log_path, flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    main, child = _pids(Path(proc.stdout.readline().strip()))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert not _alive(main) and not _alive(child)


def test_a_port_in_use_names_the_port_and_the_fix() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"port {port} on 127.0.0.1 is already in use; fix: stop what listens"):
            check_port("127.0.0.1", port, "twin")


def test_engine_arguments_become_vllm_flags() -> None:
    """Booleans are bare flags; false is left out, except where vLLM's default is true (the prefix cache), which
    takes the --no- form; None is left out."""
    def argv(**engine_args: object) -> tuple[str, ...]:
        return vllm_command(label="s", python="py", model_dir="/m", dtype="float32", host="127.0.0.1", port=1,
                            model_name="m", seed=0, engine_args=engine_args, speculative=None).argv

    flags = argv(enforce_eager=True, enable_prefix_caching=False, max_model_len=512, max_num_seqs=None)
    assert "--enforce-eager" in flags and "--no-enable-prefix-caching" in flags
    assert flags[flags.index("--max-model-len") + 1] == "512" and "--max-num-seqs" not in flags
    flags = argv(enforce_eager=False, enable_prefix_caching=True)
    assert "--enforce-eager" not in flags and "--enable-prefix-caching" in flags
    assert "--no-enable-prefix-caching" not in flags
