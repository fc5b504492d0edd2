"""The plugin's session object: options resolved once, the suite bench (created on first use), results and gates."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from specperf.analysis import gates
from specperf.analysis.extract import baseline_metrics, case_metrics
from specperf.config import SuiteConfig, Thresholds
from specperf.config.cases import Case, build_cases
from specperf.pytest_plugin.options import Options

if TYPE_CHECKING:
    from specperf.bench.suite import SuiteBench
    from specperf.pytest_plugin.ab import AbSession
    from specperf.records import CaseRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMING_SKIPPED = ("timing gates skipped: --benchmark-disable decoded each case once, untimed; the deterministic "
                  "gates (acceptance, exactness, work metrics) still apply")


class SpecperfSession:
    """Built in pytest_configure; owns everything a suite run shares."""

    def __init__(self, pytest_config: pytest.Config, options: Options, suite: SuiteConfig,
                 thresholds: Thresholds, baseline: dict[str, list[dict[str, Any]]] | None, declared: bool) -> None:
        self.pytest_config = pytest_config
        self.options = options
        self.suite = suite
        self.thresholds = thresholds
        self.baseline = baseline
        self.declared = declared  # the run named a suite (option or ini): specperf is in use from the start
        self.all_draft_cases, all_baselines = build_cases(suite)
        # The whole suite's ids, whatever the shard: the merge checks them, and the timing gate shares its
        # false-alarm rate over every draft case of the suite.
        self.suite_case_ids = sorted(c.id for c in [*self.all_draft_cases, *all_baselines])
        shard = options.shard
        self.draft_cases = shard.select(self.all_draft_cases, self.suite_case_ids) if shard else self.all_draft_cases
        self.baseline_cases = shard.select(all_baselines, self.suite_case_ids) if shard else all_baselines
        self.results: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []  # said once in the terminal summary and the report
        self._bench: SuiteBench | None = None
        self._ab: AbSession | None = None

    @functools.cached_property
    def timing_gated_cases(self) -> int:
        """The draft cases of this run that the baseline holds: they share the run's timing false-alarm rate."""
        return sum(c.id in (self.baseline or {}) for c in self.all_draft_cases)

    @property
    def in_use(self) -> bool:
        return self.declared or self._bench is not None

    @property
    def bench(self) -> SuiteBench:
        """Created at first use, so a pytest run without perf cases never imports torch or touches a model."""
        if self._bench is None:
            from specperf.bench.suite import SuiteBench

            hook = self.pytest_config.hook.pytest_specperf_interventions
            self._bench = SuiteBench(self.suite, hook(config=self.pytest_config))
        return self._bench

    @property
    def ab(self) -> AbSession:
        """The in-session A/B (--specperf-ab), created on first use: its workers start with the first draft case."""
        if self._ab is None:
            from specperf.pytest_plugin.ab import AbSession

            self._ab = AbSession(self.options, self.pytest_config, self.suite, [c.id for c in self.all_draft_cases])
        return self._ab

    def close(self) -> None:
        """Shut down the engines the bench started (vLLM's live in child processes) and the A/B's workers; called at
        session end."""
        if self._bench is not None:
            self._bench.close()
        if self._ab is not None:
            self._ab.close()

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("specperf: %s", text)

    def _record(self, case: Case, values: dict[str, Any], benchmark: Any) -> None:
        values["case_id"] = case.id
        self.results[case.id] = values
        self.pytest_config.hook.pytest_specperf_record(config=self.pytest_config, case=case, metrics=values,
                                                       extra_info=benchmark.extra_info)

    def _guarded(self, case: Case, work: Callable[[], T]) -> T:
        """Run one case's decoding. Out of memory (torch's allocator, cuBLAS/cuDNN, a vLLM engine's start) fails
        this case only, with figures, and frees what it held; a device failure that leaves the CUDA context
        unusable fails it and stops the session."""
        from specperf.bench.memory import (
            CaseOutOfMemory,
            DeviceFailure,
            Failure,
            classify,
            device_failure_message,
            memory_figures,
            oom_fix,
            release,
        )

        bench = self.bench
        try:
            return work()
        except Exception as exc:
            failure = classify(exc)
            if failure is Failure.OTHER:
                raise
            if failure is Failure.DEVICE_FATAL:  # nothing is freed: any CUDA call may fail again
                self._stop_session(f"stopping: {case.id} hit a CUDA device failure, after which this process's "
                                   "CUDA context cannot be trusted (its error above says which)")
                raise DeviceFailure(device_failure_message(case.id, bench.device, exc)) from exc
            message = str(exc)
        # Outside the except block: the OOM traceback, and the tensors its frames hold, are gone by now.
        figures = memory_figures(bench.device)
        bench.runner.forget_request_state()
        release(bench.device)
        raise CaseOutOfMemory(
            f"{case.id}: out of memory on {bench.device}: {message}\nmemory at the failure: {figures}; "
            f"after freeing: {memory_figures(bench.device)}. The other cases go on. Fix: "
            f"{oom_fix(case.draft is not None and case.draft.engine == 'vllm')}"
        )

    def _stop_session(self, reason: str) -> None:
        """Stop the pytest session after the current case, as ``-x`` does (exit status 1, the reason in the
        summary); outside a pytest session, exit at once."""
        session = self.pytest_config.pluginmanager.get_plugin("session")
        if session is None:
            pytest.exit(reason, returncode=pytest.ExitCode.TESTS_FAILED)
        session.shouldfail = reason

    def run_baseline(self, case: Case, benchmark: Any) -> dict[str, Any]:
        """Benchmark the verifier-only baseline of one slice."""
        if self.options.ab_root is not None:
            pytest.skip("A/B mode: each side's verifier-only rounds are paired inside its draft cases")
        benchmark.group = f"slice {case.slice}"
        benchmark.extra_info["case_id"] = case.id  # first: a case that errors later still names itself in the JSON
        record = self._guarded(case, lambda: self.bench.run_baseline(case, benchmark))
        values: dict[str, Any] = dict(baseline_metrics(record))  # a BaseInfo once _record adds the case id
        self._record(case, values, benchmark)
        return values

    def run_case(self, case: Case, benchmark: Any) -> dict[str, Any]:
        """Benchmark one draft case, record its metrics, then apply every gate; a violation fails the case."""
        assert case.draft is not None
        benchmark.group = f"slice {case.slice}"
        benchmark.extra_info["case_id"] = case.id  # first: a case that errors later still names itself in the JSON
        if self.options.ab_root is not None:
            return self._run_ab_case(case, benchmark)
        record: CaseRecord = self._guarded(case, lambda: self.bench.run_case(case, benchmark))
        values: dict[str, Any] = dict(case_metrics(record))  # a DraftInfo once _record adds the case id
        if record.serving is not None:  # a server case: a ServerInfo
            values.update(record.serving)
        self._record(case, values, benchmark)
        if not record.timed:
            self.note(TIMING_SKIPPED)
        if values.get("exact_match_gated") is None and record.context.temperature > 0:
            self.note(gates.SAMPLING_NOTE)
        old = self.baseline.get(case.id) if self.baseline is not None else None
        if self.baseline is not None and old is None:
            log.warning("%s is not in the baseline %s: only absolute floors apply", case.id,
                        ", ".join(map(str, self.options.baseline_paths)))
        violations = gates.evaluate(case.id, case.draft.name, values, old, self.thresholds, timed=record.timed,
                                    n_cases=self.timing_gated_cases)
        if violations:
            raise gates.RegressionDetected("\n".join(v.message() for v in violations))
        return values

    def _run_ab_case(self, case: Case, benchmark: Any) -> dict[str, Any]:
        """One draft case measured against side A round by round; a DIFFERENT slowdown or a work difference fails."""
        from specperf.pytest_plugin.ab import AbRegression

        values, failures = self.ab.run_case(case, benchmark)
        self._record(case, values, benchmark)
        if failures:
            raise AbRegression("\n".join(failures))
        return values
