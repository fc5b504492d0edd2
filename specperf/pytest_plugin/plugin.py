"""specperf's pytest plugin: options, the session object, parametrization, fixtures and hooks. Nothing else.

Registered through the ``pytest11`` entry point, so it loads in every pytest run of an environment that has specperf
installed. It imports only pytest and specperf's torch-free configuration here; the engine, torch and transformers
load when the first specperf case runs.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from specperf.config import SuiteConfig, apply_thresholds_file, load_config, narrow
from specperf.config.cases import build_cases
from specperf.config.schema import VLLM_INSTALL
from specperf.errors import ConfigError, SpecperfError
from specperf.pytest_plugin import hookspecs
from specperf.pytest_plugin.options import Options, add_options, read_options
from specperf.pytest_plugin.session import SpecperfSession

log = logging.getLogger(__name__)

# What serving mode (engine: server) imports: the extra specperf[serve].
SERVE_MODULES = ("httpx", "httpx_sse", "prometheus_client")
_SESSION = pytest.StashKey[SpecperfSession]()
_OPTIONS = ("specperf_config", "specperf_device", "specperf_dtype", "specperf_drafts", "specperf_k", "specperf_batch",
            "specperf_max_new_tokens", "specperf_shard", "specperf_slice", "specperf_thresholds", "specperf_baseline",
            "specperf_report", "specperf_ab")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _check_device(device: str) -> None:
    """Refuse cuda or cuda:N where CUDA is missing now, at configure time, not at the first model load."""
    if device.startswith("cuda"):
        from specperf.bench.models import resolve_device  # torch, but only for a run that asks for CUDA

        resolve_device(device)


def _check_dataset(suite: SuiteConfig) -> None:
    """A local data file that is missing, a directory or empty is a configuration error, reported at start."""
    ds = suite.dataset
    if ds.source in ("file", "pubmedqa-json"):
        from specperf.data.sources import require_file

        try:
            require_file(ds.path, ds.source)
        except SpecperfError as exc:
            raise ConfigError(f"dataset.path: {exc}") from None


def _check_vllm(suite: SuiteConfig) -> None:
    """A suite with an ``engine: vllm`` draft needs vLLM installed; say so at start, with the install command."""
    import importlib.util

    names = [d.name for d in suite.drafts if d.engine == "vllm"]
    if names and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"draft(s) {', '.join(names)} use engine: vllm, but vLLM is not installed in this "
                          f"environment; fix: {VLLM_INSTALL}, or drop those drafts (--specperf-drafts)")
    served = [d.name for d in suite.drafts if d.engine == "server"]
    missing = [m for m in SERVE_MODULES if served and importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"draft(s) {', '.join(served)} use engine: server, which needs {', '.join(missing)}; "
                          "fix: pip install 'specperf[serve]', or drop those drafts (--specperf-drafts)")
    if served and not suite.serving.attached and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"draft(s) {', '.join(served)} use engine: server, and specperf starts vLLM's server for "
                          f"them, but vLLM is not installed in this environment; fix: {VLLM_INSTALL}; or attach "
                          "to running servers (serving.url and serving.baseline_url)")


def _load_baseline(pytest_config: pytest.Config, paths: tuple[Path, ...],
                   suite: SuiteConfig) -> dict[str, list[dict[str, Any]]]:
    """Each case's baseline runs; an error if they share no draft case with this run or come from another kind of
    machine than this one, a warning if they lack some cases (errored ones included).

    The kind of this machine needs torch (GPU, CUDA and cuDNN builds): a run with a baseline imports it here."""
    from specperf.bench.environment import environment_info
    from specperf.output.benchfile import baseline_history, machine_kind, read_baseline, require_same_machine

    case_ids = [case.id for case in build_cases(suite)[0]]
    runs = read_baseline(paths, case_ids)
    source = f"baseline file {paths[0]}" if len(paths) == 1 and paths[0].is_file() else \
        f"baseline runs {', '.join(map(str, paths))}"
    generate = getattr(pytest_config.hook, "pytest_benchmark_generate_machine_info", None)
    here = dict(generate(config=pytest_config) or {}) if generate is not None else {"machine": platform.machine()}
    here["specperf"] = environment_info(suite)
    require_same_machine(machine_kind(here), runs, here="this machine",
                         fix="pass a baseline recorded on this kind of machine, or record one here with "
                             "`pytest perf/ --benchmark-json=FILE` (or drop --specperf-baseline)")
    baseline = baseline_history(runs)
    missing = [case_id for case_id in case_ids if case_id not in baseline]
    if missing:
        errored = {case_id for run in runs for case_id in run.errored} & set(missing)
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        why = f"; {len(errored)} of them errored there, with no metrics" if errored else ""
        pytest_config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"specperf: {source} lacks {len(missing)} of this run's {len(case_ids)} draft case(s) "
            f"({shown}{why}); only absolute floors gate those"), stacklevel=2)
    return baseline


def _check_ab(opts: Options, suite: SuiteConfig) -> None:
    """An A/B's design and side A's suite file, checked at start; the workers start with the first draft case."""
    from specperf.pytest_plugin.ab import a_config, ab_plan

    ab_plan(opts, len(build_cases(suite)[0]))
    if not a_config(opts).is_file():
        raise ConfigError(f"side A's suite {a_config(opts)} does not exist; fix: pass --specperf-ab-config")


def _build_session(pytest_config: pytest.Config) -> SpecperfSession:
    opts = read_options(pytest_config)
    suite = load_config(opts.config_path)
    if opts.thresholds_path is not None:  # before narrowing: the file may name drafts this run leaves out
        suite = apply_thresholds_file(suite, opts.thresholds_path)
    suite = narrow(suite, opts.drafts, opts.k, opts.slices, opts.batch_size)
    suite = replace(suite, device=opts.device or suite.device, dtype=opts.dtype or suite.dtype)
    if opts.max_new_tokens is not None:
        suite = replace(suite, generation=replace(suite.generation, max_new_tokens=opts.max_new_tokens))
    _check_device(suite.device)
    _check_dataset(suite)
    _check_vllm(suite)
    if opts.ab_root is not None:
        _check_ab(opts, suite)
    baseline = _load_baseline(pytest_config, opts.baseline_paths, suite) if opts.baseline_paths else None
    declared = bool(pytest_config.getini("specperf_config")) or \
        any(pytest_config.getoption(o) is not None for o in _OPTIONS)
    return SpecperfSession(pytest_config, opts, suite, suite.thresholds, baseline, declared)


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[_SESSION] = _build_session(config)
    except SpecperfError as exc:
        raise pytest.UsageError(f"specperf: {exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = metafunc.config.stash.get(_SESSION, None)
    if session is None:
        return
    for name, cases in (("specperf_case", session.draft_cases), ("specperf_baseline_case", session.baseline_cases)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def specperf(request: pytest.FixtureRequest) -> SpecperfSession:
    """The suite session: runs cases (``run_case``, ``run_baseline``), holds the bench and the results."""
    return request.config.stash[_SESSION]


@pytest.hookimpl(trylast=True)
def pytest_specperf_record(config: pytest.Config, case: Any, metrics: dict[str, Any],
                           extra_info: dict[str, Any]) -> None:
    extra_info.update(metrics)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None or not session.in_use:  # another project's benchmarks: no torch for them
        return
    from specperf.bench.environment import environment_info

    machine_info["specperf"] = {**environment_info(session.suite), **_shard_info(session)}


def _shard_info(session: SpecperfSession) -> dict[str, Any]:
    """What `specperf merge` checks: this run's shard and the whole suite's case ids."""
    return {"shard": str(session.options.shard) if session.options.shard else None,
            "suite_cases": session.suite_case_ids}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None or not session.results:
        return
    from specperf.output.tables import acceptance_table, performance_table

    terminalreporter.section("specperf")
    for note in session.notes:
        terminalreporter.write_line(f"note: {note}")
    terminalreporter.write_line("performance per case")
    for line in performance_table(session.results):
        terminalreporter.write_line(line)
    terminalreporter.write_line("")
    terminalreporter.write_line("acceptance per draft")
    for line in acceptance_table(session.results):
        terminalreporter.write_line(line)
    if session.options.ab_root is not None and session.ab.results:
        from specperf.output.ab_report import ab_table

        terminalreporter.write_line("")
        terminalreporter.write_line(f"A/B: side A {session.options.ab_root}, side B this checkout")
        for line in ab_table(session.ab.results):
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is not None:
        state.close()
        if state.options.ab_root is not None and state.ab.results:
            log.info("specperf A/B report written to %s", state.ab.write())
    if state is None or state.options.report_dir is None or not state.results:
        return
    from specperf.bench.environment import environment_info
    from specperf.output.report import write_report, write_summary

    write_summary(state.results, state.options.report_dir)
    path = write_report(state.results, state.options.report_dir,
                        machine_info={"specperf": environment_info(state.suite)}, notes=state.notes)
    log.info("specperf report written to %s", path)
