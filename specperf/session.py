"""The plugin's session object: options resolved once, the runner, the baseline JSON, results and gates."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from specperf import gates
from specperf.config import SuiteConfig, Thresholds
from specperf.memory import CaseOutOfMemory, is_out_of_memory, memory_figures, release
from specperf.results import baseline_metrics, case_metrics
from specperf.suite import Case, SuiteRunner, build_cases

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """The command line, parsed."""

    config_path: Path
    device: str | None
    dtype: str | None
    drafts: tuple[str, ...] | None
    k: tuple[int, ...] | None
    slices: tuple[str, ...] | None
    batch_size: tuple[int, ...] | None
    thresholds_path: Path | None
    baseline_path: Path | None
    report_dir: Path | None


class SpecperfSession:
    """Built in pytest_configure; owns everything a suite run shares."""

    def __init__(self, pytest_config: pytest.Config, options: Options, config: SuiteConfig,
                 thresholds: Thresholds, baseline: dict[str, dict[str, Any]] | None) -> None:
        self.pytest_config = pytest_config
        self.options = options
        self.config = config
        self.thresholds = thresholds
        self.baseline = baseline
        self.draft_cases, self.baseline_cases = build_cases(config)
        self.results: dict[str, dict[str, Any]] = {}
        self._runner: SuiteRunner | None = None

    @property
    def runner(self) -> SuiteRunner:
        """Created at first use, so a pytest run without perf cases never touches a model."""
        if self._runner is None:
            self._runner = SuiteRunner(self.config)
        return self._runner

    def _record(self, case: Case, values: dict[str, Any], benchmark: Any) -> None:
        values["case_id"] = case.id
        self.results[case.id] = values
        self.pytest_config.hook.pytest_specperf_record(config=self.pytest_config, case=case, metrics=values,
                                                       extra_info=benchmark.extra_info)

    def _guarded(self, case: Case, work: Callable[[], T]) -> T:
        """Run one case's decoding; out of memory fails this case only, with figures, and frees what it held."""
        try:
            return work()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            message = str(exc)
        # Outside the except block: the OOM traceback, and the tensors its frames hold, are gone by now.
        figures = memory_figures(self.runner.device)
        self.runner.forget_request_state()
        release(self.runner.device)
        raise CaseOutOfMemory(
            f"{case.id}: out of memory on {self.runner.device}: {message}\nmemory at the failure: {figures}; "
            f"after freeing: {memory_figures(self.runner.device)}. The other cases go on. Fix: a shorter slice or "
            "max_new_tokens, a smaller k or batch, float16/bfloat16, or a bigger device"
        )

    def run_baseline(self, case: Case, benchmark: Any) -> dict[str, Any]:
        """Benchmark the verifier-only baseline of one slice."""
        benchmark.group = f"slice {case.slice}"
        run = self._guarded(case, lambda: self.runner.benchmark_baseline(case, benchmark))
        values = baseline_metrics(self.runner, run)
        self._record(case, values, benchmark)
        return values

    def run_case(self, case: Case, benchmark: Any) -> dict[str, Any]:
        """Benchmark one draft case, record its metrics, then apply every gate; a violation fails the case."""
        benchmark.group = f"slice {case.slice}"
        run = self._guarded(case, lambda: self.runner.benchmark_case(case, benchmark))
        values = case_metrics(self.runner, run)
        self._record(case, values, benchmark)
        old = self.baseline.get(case.id) if self.baseline is not None else None
        if self.baseline is not None and old is None:
            log.warning("%s is not in the baseline file %s: only absolute floors apply", case.id,
                        self.options.baseline_path)
        violations = gates.evaluate(case.id, case.draft.name, values, old, self.thresholds)
        if violations:
            raise gates.RegressionDetected("\n".join(v.message() for v in violations))
        return values
