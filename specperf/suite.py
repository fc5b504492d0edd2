"""The suite runner: cases from a config, models loaded once, prompts tokenized once, timed passes, audit, metrics.

pytest-agnostic: the plugin hands it a pytest-benchmark fixture, and everything else lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from specperf.audit import Audit, audit_drafter, audit_model_draft
from specperf.config import DraftSpec, SuiteConfig
from specperf.data import apply_slice, fit_prompts, load_records
from specperf.decoding import DecodeResult, decode, decode_batch, hf_assisted_decode
from specperf.decoding.costs import step_seconds
from specperf.decoding.model_step import context_window, vocab_size
from specperf.drafters import Drafter, ModelDrafter, PromptLookupDrafter
from specperf.errors import SpecperfError
from specperf.faults import from_env as injected_faults
from specperf.faults import slow_down, speed_up, wrap_drafter
from specperf.models import LoadedModel, check_same_tokenizer, load_model, resolve_device

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 1024  # GPT-2's window, for a config that states none


class AuditMismatch(SpecperfError):
    """The audit's recomputed greedy acceptance differs from the engine's own counters."""


GroupFn = Callable[[int, list[list[int]]], list[DecodeResult]]


@dataclass(frozen=True)
class Case:
    """One benchmark case: a draft (None for the verifier-only baseline) at block size k on a dataset slice,
    decoding batch_size requests together."""

    draft: DraftSpec | None
    k: int
    slice: str
    batch_size: int = 1

    @property
    def id(self) -> str:
        """Stable across commits: pytest-benchmark's --benchmark-compare matches runs by it. Batch 1 has no suffix."""
        suffix = f"-b{self.batch_size}" if self.batch_size > 1 else ""
        if self.draft is None:
            return f"baseline-{self.slice}{suffix}"
        return f"{self.draft.name}-k{self.k}-{self.slice}{suffix}"

    @property
    def baseline(self) -> Case:
        """The verifier-only case this one is timed against: same slice, same batch size."""
        return Case(None, 0, self.slice, self.batch_size)


@dataclass
class PromptSet:
    """A slice's prompts, tokenized and fitted to the context window once per session."""

    slice: str
    ids: list[list[int]]
    record_ids: list[str]
    n_shortened: int


@dataclass
class CaseRun:
    """What the timed rounds of one case produced (warm-up rounds dropped)."""

    case: Case
    rounds: list[list[DecodeResult]]
    baseline_rounds: list[list[DecodeResult]] = field(default_factory=list)
    audits: list[Audit] = field(default_factory=list)


def build_cases(config: SuiteConfig) -> tuple[list[Case], list[Case]]:
    """(draft cases, baseline cases): every (draft, k, slice, batch size), and one baseline per (slice, batch size).

    transformers' assisted generation decodes one request at a time, so HF-engine drafts run at batch size 1 only.
    """
    slices, sizes = list(config.dataset.slices), list(config.batch_size)
    drafts = [Case(d, k, s, b) for s in slices for b in sizes for d in config.drafts for k in config.k
              if b == 1 or d.engine != "hf"]
    return drafts, [Case(None, 0, s, b) for s in slices for b in sizes]


class SuiteRunner:
    """Session state of one suite run. Loads each model once per (name, device, dtype)."""

    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self._models: dict[str, LoadedModel] = {}
        self._prompts: dict[str, PromptSet] = {}
        self._drafters: dict[str, Drafter] = {}
        self._step_cost: dict[tuple[str, int], float] = {}
        self.faults = injected_faults()  # test-only regressions for perf/gate_quality.py; none unless set

    # -- models and prompts -------------------------------------------------------------------------------------
    def model(self, name: str) -> LoadedModel:
        if name not in self._models:
            self._models[name] = load_model(name, device=str(self.device), dtype=self.config.dtype,
                                            trust_remote_code=self.config.trust_remote_code)
            if name != self.config.verifier:
                check_same_tokenizer(self.verifier, self._models[name])
        return self._models[name]

    @property
    def verifier(self) -> LoadedModel:
        return self.model(self.config.verifier)

    def prompts(self, slice_name: str) -> PromptSet:
        if slice_name not in self._prompts:
            ds = self.config.dataset
            records = apply_slice(load_records(ds.source, path=ds.path, hf_config=ds.hf_config, split=ds.split,
                                               template=ds.template), slice_name)
            window = context_window(self.verifier.model) or DEFAULT_CONTEXT
            fit = fit_prompts(records, self.verifier.tokenizer, max_context=window,
                              max_new_tokens=self.config.generation.max_new_tokens, template=ds.template,
                              policy=ds.context_policy)
            self._prompts[slice_name] = PromptSet(slice_name, fit.prompt_ids, [r.id for r in records],
                                                  fit.n_shortened)
        return self._prompts[slice_name]

    def drafter(self, spec: DraftSpec) -> Drafter:
        """The case's drafter: one per draft name, reused by every case and request."""
        if spec.name not in self._drafters:
            self._drafters[spec.name] = self.new_drafter(spec)
        return self._drafters[spec.name]

    def forget_request_state(self) -> None:
        """Drop the drafters (and the caches they hold); they are rebuilt on next use. Models stay loaded."""
        self._drafters.clear()

    def new_drafter(self, spec: DraftSpec) -> Drafter:
        if spec.drafter == "prompt-lookup":
            drafter: Drafter = PromptLookupDrafter(max_ngram=spec.max_ngram, min_ngram=spec.min_ngram)
        else:
            drafter = ModelDrafter(self.model(spec.model).model, label=spec.model)
        return wrap_drafter(drafter, self.faults, vocab_size(self.verifier.model))

    # -- decoding -----------------------------------------------------------------------------------------------
    def _eos(self) -> int | None:
        return self.verifier.tokenizer.eos_token_id if self.config.generation.stop_at_eos else None

    def decode_fn(self, case: Case) -> GroupFn:
        """A function decoding a group of the slice's requests together (first index, prompts); built once, so
        the timed loop only decodes. Batch size 1 uses the batch-1 engine, whose numbers every baseline JSON holds."""
        gen, verifier, eos = self.config.generation, self.verifier.model, self._eos()
        common = dict(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, eos_token_id=eos)
        drafter = self.drafter(case.draft) if case.draft is not None and case.draft.engine != "hf" else None
        if case.batch_size > 1:
            def group(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
                return decode_batch(verifier, prompts, drafter=drafter, k=case.k or 1, seed=gen.seed + i, **common)
        elif case.draft is None or drafter is not None:
            def group(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
                return [decode(verifier, prompts[0], drafter=drafter, k=case.k or 1, seed=gen.seed + i, **common)]
        else:
            draft_model = self.model(case.draft.model).model

            def group(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
                return [hf_assisted_decode(verifier, prompts[0], draft_model, k=case.k, seed=gen.seed + i,
                                           **common)]
        if case.draft is None:
            return speed_up(group, self.faults.baseline_speedup)
        return slow_down(group, self.faults.spec_slowdown)

    def pass_fn(self, case: Case) -> Callable[[], list[DecodeResult]]:
        """Decode every prompt of the case's slice once, batch_size requests at a time, in slice order."""
        fn, prompts, size = self.decode_fn(case), self.prompts(case.slice).ids, case.batch_size
        groups = [(i, prompts[i : i + size]) for i in range(0, len(prompts), size)]
        return lambda: [r for i, group in groups for r in fn(i, group)]

    def run_pass(self, case: Case) -> list[DecodeResult]:
        """Decode every prompt of the case's slice once."""
        return self.pass_fn(case)()

    def benchmark_baseline(self, case: Case, benchmark: Any) -> CaseRun:
        """Time the verifier-only baseline of a slice; its run is kept for every draft case of the slice."""
        timing, decode_pass = self.config.timing, self.pass_fn(case)
        rounds: list[list[DecodeResult]] = []

        def target() -> None:
            rounds.append(decode_pass())

        benchmark.pedantic(target, rounds=timing.rounds, warmup_rounds=timing.warmup_rounds, iterations=1)
        return CaseRun(case, rounds[timing.warmup_rounds:])

    def benchmark_case(self, case: Case, benchmark: Any) -> CaseRun:
        """Time a draft case with a verifier-only pass before every round (in pedantic's untimed setup).

        Pairing the rounds makes machine drift hit both sides, so per-round speedups can be compared.
        """
        timing = self.config.timing
        decode_pass, baseline_pass = self.pass_fn(case), self.pass_fn(case.baseline)
        rounds: list[list[DecodeResult]] = []
        base_rounds: list[list[DecodeResult]] = []

        def setup() -> None:
            base_rounds.append(baseline_pass())

        def target() -> None:
            rounds.append(decode_pass())

        benchmark.pedantic(target, setup=setup, rounds=timing.rounds, warmup_rounds=timing.warmup_rounds,
                           iterations=1)
        warm = timing.warmup_rounds
        run = CaseRun(case, rounds[warm:], base_rounds[warm:])
        run.audits = self.audit(case, run.rounds[-1])
        return run

    # -- audit and costs ------------------------------------------------------------------------------------------
    def audit(self, case: Case, results: list[DecodeResult]) -> list[Audit]:
        """Replay each request's tokens through the draft, teacher-forced; check greedy counters exactly."""
        assert case.draft is not None
        prompts, gen = self.prompts(case.slice).ids, self.config.generation
        audits = []
        for prompt, result in zip(prompts, results):
            if case.draft.drafter == "prompt-lookup" or self.faults.corrupt_every:
                audit = audit_drafter(self.new_drafter(case.draft), prompt, result.tokens, k=case.k,
                                      max_new_tokens=gen.max_new_tokens)
            else:
                audit = audit_model_draft(self.model(case.draft.model).model, prompt, result.tokens, k=case.k,
                                          max_new_tokens=gen.max_new_tokens)
            audits.append(audit)
        if gen.temperature == 0.0 and case.draft.engine == "specperf":
            self._check_counters(case, results, audits)
        return audits

    def _check_counters(self, case: Case, results: list[DecodeResult], audits: list[Audit]) -> None:
        for i, (result, audit) in enumerate(zip(results, audits)):
            if (result.proposed, result.accepted) != (audit.proposed, audit.accepted):
                raise AuditMismatch(
                    f"{case.id}, request {i}: the engine counted {result.accepted}/{result.proposed} accepted/proposed "
                    f"draft tokens, the audit recomputed {audit.accepted}/{audit.proposed}"
                )

    def step_cost(self, model_name: str, n_tokens: int, slice_name: str) -> float:
        """Median seconds of one cached forward of ``model_name`` over n_tokens, at the slice's first prompt."""
        key = (model_name, n_tokens)
        if key not in self._step_cost:
            prompt = self.prompts(slice_name).ids[0]
            self._step_cost[key] = step_seconds(self.model(model_name).model, prompt, n_tokens)
        return self._step_cost[key]
