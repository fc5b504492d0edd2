"""Tiny random causal LMs built from configs: no hub, no weights on disk."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

# No test needs a model hub: offline mode, forced whatever the shell says, makes a stray hub lookup fail at once
# instead of waiting on the network. Set before torch and transformers load: huggingface_hub and datasets read the
# switches once, at import. Only the tests: `pytest perf/` never loads this file, and honours the caller's settings.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import run_suite

if TYPE_CHECKING:
    import torch
    from transformers import GPT2LMHeadModel

pytest_plugins = ["pytester"]

# Pytester's in-process sessions put sys.modules back as they found it, dropping every module they imported first:
# a module that this process has not loaded yet is imported again by every such session. These are loaded once per
# test process, before the first test (pytest_configure): hypothesis (its pytest plugin imports it for the terminal
# summary, and pytest rewrites its asserts: about 2.5 s a session), matplotlib's Agg figures (reports), torch and
# transformers' GPT-2 model and tokenizer classes. specperf's own modules still start fresh in every session.
# xdist's main process runs no test, so it skips them (several seconds before the workers could start).
PRELOADED = ("hypothesis", "matplotlib.backends.backend_agg", "matplotlib.figure", "torch",
             "transformers.models.gpt2.modeling_gpt2", "transformers.models.auto.tokenization_auto",
             "transformers.models.gpt2.tokenization_gpt2")

# `pytest tests/` runs on this many worker processes (pytest-xdist) unless -n is given (-n 0: one process). The
# tests are CPU-bound and mostly single-threaded, so two workers halve the suite's time on a 2-core machine.
TEST_WORKERS = min(2, len(os.sched_getaffinity(0)))
XDIST_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Default to TEST_WORKERS workers (runs before xdist's own hook, which turns -n into its session). Not in a
    worker: xdist clears -n there and calls this hook again."""
    if hasattr(config, "workerinput"):
        # A worker parses the command line again, without the dist set below: the main process says it (see
        # pytest_configure_node), so that xdist's worker hook tags each test with its group.
        config.option.loadgroup = bool(config.workerinput.get("specperf_loadgroup"))
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if getattr(config.option, "numprocesses", 0) is None and TEST_WORKERS > 1:
        config.option.numprocesses = TEST_WORKERS
        if config.option.dist == "no":  # the units of work are pytest_collection_modifyitems' groups, in its order
            config.option.dist = "loadgroup"
            config.option.loadscopereorder = False


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist's hook, in the main process, before a worker starts: pass it the grouping chosen above."""
    config = node.config  # type: ignore[attr-defined]  # an xdist WorkerController
    node.workerinput["specperf_loadgroup"] = config.option.dist == "loadgroup"  # type: ignore[attr-defined]


# Slow tests that share an expensive fixture (module- or run-scoped, seconds to make) run on one worker, where it is
# made once: otherwise each worker would make the module fixture again, or wait idle for the other's once_per_run.
SHARED_SETUP = ("bench_json", "cpu_run", "embedded_setup", "seed_run", "pytest_options")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The units xdist hands out, and their order. Every other slow test is a unit of its own (one A/B session alone
    is a minute; whole modules balance two workers badly), a fast module's tests are one unit (their module
    fixtures made once). Slow units go first, so the long ones start early and the short ones even out the end.
    Without xdist (-p no:xdist) there are no groups to hand out."""
    grouped = items if config.pluginmanager.hasplugin("xdist") else []
    for item in grouped:
        shared = [name for name in SHARED_SETUP if name in getattr(item, "fixturenames", ())]
        if shared:
            _group(item, shared[0])
        elif item.get_closest_marker("slow") is None:
            _group(item, item.nodeid.split("::")[0])
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: collection order within each


def _group(item: pytest.Item, name: str) -> None:
    """Mark ``item`` as xdist group ``name``. xdist's worker hook tags a grouped test by suffixing ``_nodeid``, which
    pytest 9.2 no longer reads (a node's id is ``_id``), so the suffix is set here the way pytest reads it; xdist's
    own hook then finds it there and leaves it."""
    item.add_marker(pytest.mark.xdist_group(name))
    config = item.config
    if getattr(config.option, "loadgroup", False) and hasattr(item, "_id") and "@" not in item.nodeid:
        from _pytest.nodes import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{name}")


def pytest_configure(config: pytest.Config) -> None:
    """In a worker, hide xdist's variables from the pytest sessions the tests start (in process or as children):
    pytest-benchmark turns itself off when it sees them, and those sessions are not distributed. In every process that
    runs tests, load PRELOADED and give torch one thread."""
    if hasattr(config, "workerinput"):
        for name in XDIST_VARIABLES:
            os.environ.pop(name, None)
    elif getattr(config.option, "numprocesses", None):
        return  # xdist's main process: it hands out tests and runs none
    for name in PRELOADED:
        importlib.import_module(name)
    import torch

    # Tiny models run fastest on one thread: OpenMP's fork/join costs more than their matmuls (7x here at 2 threads).
    torch.set_num_threads(1)

@pytest.fixture(scope="session")
def verifier() -> GPT2LMHeadModel:
    from tests.tiny_models import tiny_gpt2

    return tiny_gpt2(n_layer=2, n_embd=64, seed=0)


@pytest.fixture(scope="session")
def random_draft() -> GPT2LMHeadModel:
    from tests.tiny_models import tiny_gpt2

    return tiny_gpt2(n_layer=1, n_embd=32, seed=1)


@pytest.fixture(scope="session")
def identical_draft(verifier: GPT2LMHeadModel) -> torch.nn.Module:
    from tests.tiny_models import clone_weights

    return clone_weights(verifier)


def once_per_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str,
                 make: Callable[[Path], Path]) -> Path:
    """``make(folder)`` run once per test run, by whichever xdist worker asks first; the other workers wait for it
    and reuse its result (xdist's recipe for session fixtures that must run once)."""
    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):
        root = root.parent  # shared by the workers of this run
    folder, result = root / f"once-{name}", root / f"once-{name}.result"
    with (root / f"once-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            folder.mkdir(exist_ok=True)
            result.write_text(str(make(folder)))
    return Path(result.read_text())


@pytest.fixture(scope="session")
def bench_json(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real, small benchmark run shared by the report and CLI tests: its ``--benchmark-json`` file (read only:
    copy it before changing it). It runs once per test run, on whichever worker first needs it."""
    return once_per_run(request, tmp_path_factory, "bench", run_suite)


@pytest.fixture(scope="session")
def bench_suite(bench_json: Path) -> Path:
    """The suite YAML the shared run used (for ``specperf compare --config``)."""
    return bench_json.parent / "suite.yaml"
