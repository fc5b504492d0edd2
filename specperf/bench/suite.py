"""One suite run's benchmark side: the model store, the case runner, the audit and the step-cost meter, composed.

Each case run ends in a :class:`~specperf.records.CaseRecord` of plain numbers, which the analysis turns into
metrics without touching a model.
"""

from __future__ import annotations

from typing import Any

from specperf.bench.audit import audit_case, divergences
from specperf.bench.breakdown import measure_split
from specperf.bench.interventions import Interventions
from specperf.bench.measure import StepCostMeter
from specperf.bench.replay import Replayer
from specperf.bench.runner import CaseRunner, TimedRuns
from specperf.bench.store import ModelStore
from specperf.config import SuiteConfig
from specperf.config.cases import Case
from specperf.records import CaseRecord, RunContext, TimeSplit


class SuiteBench:
    """Created on first use by the plugin session, so a pytest run without perf cases never touches a model."""

    def __init__(self, config: SuiteConfig, interventions: Interventions | None = None) -> None:
        self.config = config
        self.timing = config.timing
        self.store = ModelStore(config)
        self.runner = CaseRunner(self.store, config, interventions)
        self.costs = StepCostMeter(self.store, config.generation, config.timing)
        self.replayer = Replayer(self.runner, config.dataset, config.generation)
        self.interventions = self.runner.interventions

    @property
    def device(self) -> Any:
        return self.store.device

    def _record(self, case: Case, runs: TimedRuns) -> CaseRecord:
        config, spec = self.config, case.draft
        context = RunContext(config.verifier, str(self.store.device), config.dtype, config.generation.temperature,
                             self.interventions.describe())
        return CaseRecord(
            case_id=case.id, slice=case.slice, k=case.k, batch_size=case.batch_size,
            draft=spec.name if spec else None, draft_model=spec.model if spec else None,
            drafter=spec.drafter if spec else None, engine=spec.engine if spec else "specperf",
            context=context, rounds=runs.rounds, baseline_rounds=runs.baseline_rounds, timed=runs.timed,
            n_shortened=self.store.prompts(case.slice).n_shortened,
            verifier_params=self.store.verifier.n_params,
        )

    def _splits(self, record: CaseRecord) -> bool:
        """Whether to run the breakdown pass: a timed run whose suite asks for it."""
        return record.timed and self.timing.breakdown

    def time_split(self, case: Case) -> TimeSplit:
        """One untimed instrumented pass: where the case's wall time goes (specperf and hf engines)."""
        spec, draft, lookup = case.draft, None, None
        if spec is not None and spec.drafter == "model" and spec.model is not None:
            draft = self.store.model(spec.model).forward
        elif spec is not None:
            lookup = self.runner.drafter(spec)
        return measure_split(self.runner.pass_fn(case), verifier=self.store.verifier.forward, draft=draft,
                             lookup=lookup, batch_size=case.batch_size)

    def run_baseline(self, case: Case, benchmark: Any) -> CaseRecord:
        """Time the verifier-only baseline of a slice, then split its wall time."""
        record = self._record(case, self.runner.benchmark_baseline(case, benchmark))
        record.time_split = self.time_split(case) if self._splits(record) else None
        return record

    def run_server_case(self, case: Case, benchmark: Any) -> CaseRecord:
        """Measure one load level on the case's speculative server and its twin, then audit the server's greedy
        output with specperf's models, as for vLLM offline."""
        from specperf.bench.serving_cases import served_figures

        assert case.draft is not None
        prompts = self.store.prompts(case.slice).ids
        served = self.runner.serving.measure(case, prompts, benchmark)
        record = self._record(case, TimedRuns(served.rounds, served.baseline_rounds, timed=served.timed))
        last, twin_last = served.rounds[-1], served.baseline_rounds[-1]
        if case.draft.drafter in ("model", "prompt-lookup"):
            record.audits = audit_case(self.runner, case, last)
        # Exactness is against the twin server's greedy output at the same load.
        record.first_divergence, margins = divergences(self.runner, case, twin_last, last)
        record.divergence_margins = [None if m is None else m[0] for m in margins]
        record.divergence_magnitudes = [None if m is None else m[1] for m in margins]
        if case.draft.drafter == "model" and case.draft.model is not None:
            record.draft_params = self.store.model(case.draft.model).n_params
        record.serving = served_figures(case, served)
        return record

    def run_case(self, case: Case, benchmark: Any) -> CaseRecord:
        """Time a draft case against its paired baseline rounds, audit its last round, measure its step costs."""
        assert case.draft is not None
        if case.draft.engine == "server":
            return self.run_server_case(case, benchmark)
        runs = self.runner.benchmark_case(case, benchmark)
        record = self._record(case, runs)
        last, base_last = runs.rounds[-1], runs.baseline_rounds[-1]
        vllm = case.draft.engine == "vllm"
        if not vllm or self.runner.vllm.audited(case):
            record.audits = audit_case(self.runner, case, last)
            replay = self.replayer.case(case)
            if replay is not None:
                record.replay_slice, record.replay_audits, record.calls_by_k = replay
                record.drafted_by_k = self.replayer.drafted(case)
        # Exactness is against specperf's verifier-only tokens for every engine (vLLM's baseline is vLLM's own).
        reference = self.runner.reference(case.slice) if vllm else base_last
        record.first_divergence, margins = divergences(self.runner, case, reference, last)
        record.divergence_margins = [None if m is None else m[0] for m in margins]
        record.divergence_magnitudes = [None if m is None else m[1] for m in margins]
        if case.draft.drafter == "model" and case.draft.model is not None and (not vllm or record.audits):
            record.draft_params = self.store.model(case.draft.model).n_params
        # The step costs are of specperf's own forwards; they say nothing about vLLM's kernels.
        record.step_costs = None if vllm else self.costs.case_costs(case)
        record.time_split = self.time_split(case) if self._splits(record) and not vllm else None
        return record

    def close(self) -> None:
        """Shut down what the session started outside this process (vLLM engines, servers)."""
        self.runner.close()
