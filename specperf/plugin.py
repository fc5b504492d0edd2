"""specperf's pytest plugin: options, the session object, parametrization, fixtures and hooks. Nothing else."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from specperf import hookspecs
from specperf.config import (DEFAULT_CONFIG_PATH, MAX_BATCH_SIZE, MAX_K, SuiteConfig, apply_thresholds_file,
                             load_config)
from specperf.errors import SpecperfError
from specperf.session import Options, SpecperfSession
from specperf.tables import acceptance_table, performance_table

log = logging.getLogger(__name__)
_SESSION = pytest.StashKey[SpecperfSession]()


_DEVICE_OPTION = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def parse_list(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}; fix: name at least one, "
                                         "e.g. draft-small,prompt-lookup")
    return items


def _parse_ints(value: str, option: str, what: str, lo: int, hi: int, example: str) -> tuple[int, ...]:
    """Comma-separated integers, each in lo..hi; errors name the option and an example that works."""
    try:
        numbers = tuple(int(v) for v in parse_list(value))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as {example}, got {value!r}; "
                                         f"fix: pass e.g. {option}={example}") from None
    if any(not lo <= n <= hi for n in numbers):
        raise argparse.ArgumentTypeError(f"each {what} must be in {lo}..{hi}, got {value!r}; fix: pass values "
                                         f"in that range, e.g. {option}={example}")
    return numbers


def parse_k(value: str) -> tuple[int, ...]:
    return _parse_ints(value, "--specperf-k", "k", 1, MAX_K, "2,4")


def parse_batch(value: str) -> tuple[int, ...]:
    return _parse_ints(value, "--specperf-batch", "batch size", 1, MAX_BATCH_SIZE, "1,4,8")


def parse_device(value: str) -> str:
    if not _DEVICE_OPTION.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {value!r}; "
                                         "fix: pass e.g. --specperf-device cpu")
    return value


def parse_dtype(value: str) -> str:
    if value not in ("float32", "float16", "bfloat16"):
        raise argparse.ArgumentTypeError(f"expected float32, float16 or bfloat16, got {value!r}")
    return value


def parse_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value}; fix: pass an existing file (a relative path "
                                         f"starts at {Path.cwd()})")
    return path


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("specperf", "specperf: speculative decoding benchmarks")
    group.addoption("--specperf-config", metavar="PATH", type=parse_file, default=None,
                    help="suite YAML (default: the ini option specperf_config, else the embedded suite "
                         f"{DEFAULT_CONFIG_PATH.name})")
    group.addoption("--specperf-device", metavar="DEVICE", type=parse_device, default=None,
                    help="auto, cpu, cuda or cuda:N (default: the suite's device)")
    group.addoption("--specperf-dtype", metavar="DTYPE", type=parse_dtype, default=None,
                    help="float32, float16 or bfloat16 (default: the suite's dtype)")
    group.addoption("--specperf-drafts", metavar="NAMES", type=parse_list, default=None,
                    help="comma-separated draft names to run (default: all drafts of the suite)")
    group.addoption("--specperf-k", metavar="K", type=parse_k, default=None,
                    help="comma-separated block sizes, each 1..64 (default: the suite's k)")
    group.addoption("--specperf-batch", metavar="SIZES", type=parse_batch, default=None,
                    help="comma-separated batch sizes (requests decoded together), e.g. 1,4,8 "
                         "(default: the suite's batch_size, [1] unless set)")
    group.addoption("--specperf-slice", metavar="SLICES", type=parse_list, default=None,
                    help="comma-separated dataset slices such as 0:8,random:16:seed=0 (default: the suite's)")
    group.addoption("--specperf-thresholds", metavar="PATH", type=parse_file, default=None,
                    help="thresholds YAML, applied over the suite's inline thresholds (default: none)")
    group.addoption("--specperf-baseline", metavar="PATH", type=parse_file, default=None,
                    help="an earlier --benchmark-json file to gate against (default: none, floors only)")
    group.addoption("--specperf-report", metavar="DIR", type=Path, default=None,
                    help="write tables (and plots) of the run to DIR at the end (default: none)")
    parser.addini("specperf_config", "suite YAML used when --specperf-config is not given", default="")


def _options(config: pytest.Config) -> Options:
    path = config.getoption("specperf_config")
    if path is None:
        ini = config.getini("specperf_config")
        path = Path(config.rootpath, ini) if ini else DEFAULT_CONFIG_PATH
    return Options(
        config_path=path, device=config.getoption("specperf_device"), dtype=config.getoption("specperf_dtype"),
        drafts=config.getoption("specperf_drafts"), k=config.getoption("specperf_k"),
        slices=config.getoption("specperf_slice"), batch_size=config.getoption("specperf_batch"),
        thresholds_path=config.getoption("specperf_thresholds"),
        baseline_path=config.getoption("specperf_baseline"), report_dir=config.getoption("specperf_report"),
    )


def _check_device(device: str) -> None:
    """Refuse cuda or cuda:N where CUDA is missing now, at configure time, not at the first model load."""
    if device.startswith("cuda"):
        from specperf.models import resolve_device

        resolve_device(device)


def _load_baseline(config: pytest.Config, path: Path, suite: SuiteConfig) -> dict[str, dict[str, Any]]:
    """The baseline's cases; an error if it shares no draft case with this run, a warning if it lacks some."""
    from specperf.gates import load_baseline
    from specperf.suite import build_cases

    case_ids = [case.id for case in build_cases(suite)[0]]
    baseline = load_baseline(path, case_ids)
    missing = [case_id for case_id in case_ids if case_id not in baseline]
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"specperf: baseline file {path} lacks {len(missing)} of this run's {len(case_ids)} draft case(s) "
            f"({shown}); only absolute floors gate those"), stacklevel=2)
    return baseline


def _build_session(config: pytest.Config) -> SpecperfSession:
    from dataclasses import replace

    opts = _options(config)
    suite = load_config(opts.config_path)
    if opts.thresholds_path is not None:  # before narrowing: the file may name drafts this run leaves out
        suite = apply_thresholds_file(suite, opts.thresholds_path)
    suite = suite.narrowed(opts.drafts, opts.k, opts.slices, opts.batch_size)
    suite = replace(suite, device=opts.device or suite.device, dtype=opts.dtype or suite.dtype)
    _check_device(suite.device)
    baseline = _load_baseline(config, opts.baseline_path, suite) if opts.baseline_path is not None else None
    return SpecperfSession(config, opts, suite, suite.thresholds, baseline)


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
    """The suite session: runs cases (``run_case``, ``run_baseline``), holds the runner and the results."""
    return request.config.stash[_SESSION]


@pytest.hookimpl(trylast=True)
def pytest_specperf_record(config: pytest.Config, case: Any, metrics: dict[str, Any],
                           extra_info: dict[str, Any]) -> None:
    extra_info.update(metrics)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None:
        return
    from specperf.environment import environment_info

    machine_info["specperf"] = environment_info(session.config)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None or not session.results:
        return
    terminalreporter.section("specperf")
    terminalreporter.write_line("performance per case")
    for line in performance_table(session.results):
        terminalreporter.write_line(line)
    terminalreporter.write_line("")
    terminalreporter.write_line("acceptance per draft")
    for line in acceptance_table(session.results):
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is None or state.options.report_dir is None or not state.results:
        return
    from specperf.environment import environment_info
    from specperf.report import write_report, write_summary

    write_summary(state.results, state.options.report_dir)
    path = write_report(state.results, state.options.report_dir,
                        machine_info={"specperf": environment_info(state.config)})
    log.info("specperf report written to %s", path)
