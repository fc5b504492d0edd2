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
from specperf.decoding import DecodeResult, decode, hf_assisted_decode
from specperf.decoding.costs import step_seconds
from specperf.decoding.model_step import context_window
from specperf.drafters import Drafter, ModelDrafter, PromptLookupDrafter
from specperf.errors import SpecperfError
from specperf.models import LoadedModel, check_same_tokenizer, load_model, resolve_device

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 1024  # GPT-2's window, for a config that states none


class AuditMismatch(SpecperfError):
    """The audit's recomputed greedy acceptance differs from the engine's own counters."""


@dataclass(frozen=True)
class Case:
    """One benchmark case: a draft (None for the verifier-only baseline) at block size k on a dataset slice."""

    draft: DraftSpec | None
    k: int
    slice: str

    @property
    def id(self) -> str:
        """Stable across commits: pytest-benchmark's --benchmark-compare matches runs by it."""
        if self.draft is None:
            return f"baseline-{self.slice}"
        return f"{self.draft.name}-k{self.k}-{self.slice}"

    @property
    def baseline(self) -> Case:
        return Case(None, 0, self.slice)


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
    """(draft cases, baseline cases): every (draft, k, slice), and one baseline per slice."""
    slices = list(config.dataset.slices)
    drafts = [Case(d, k, s) for s in slices for d in config.drafts for k in config.k]
    return drafts, [Case(None, 0, s) for s in slices]


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
        self._baselines: dict[str, CaseRun] = {}
        self._step_cost: dict[tuple[str, int], float] = {}

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
        if spec.name not in self._drafters:
            if spec.drafter == "prompt-lookup":
                self._drafters[spec.name] = PromptLookupDrafter(max_ngram=spec.max_ngram, min_ngram=spec.min_ngram)
            else:
                self._drafters[spec.name] = ModelDrafter(self.model(spec.model).model, label=spec.model)
        return self._drafters[spec.name]

    # -- decoding -----------------------------------------------------------------------------------------------
    def _eos(self) -> int | None:
        return self.verifier.tokenizer.eos_token_id if self.config.generation.stop_at_eos else None

    def decode_fn(self, case: Case) -> Callable[[int, list[int]], DecodeResult]:
        """A function decoding request i of the case's slice; built once, so the timed loop only decodes."""
        gen, verifier, eos = self.config.generation, self.verifier.model, self._eos()
        common = dict(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, eos_token_id=eos)
        if case.draft is None:
            return lambda i, p: decode(verifier, p, seed=gen.seed + i, **common)
        if case.draft.engine == "hf":
            draft_model = self.model(case.draft.model).model
            return lambda i, p: hf_assisted_decode(verifier, p, draft_model, k=case.k, seed=gen.seed + i, **common)
        drafter = self.drafter(case.draft)
        return lambda i, p: decode(verifier, p, drafter=drafter, k=case.k, seed=gen.seed + i, **common)

    def run_pass(self, case: Case) -> list[DecodeResult]:
        """Decode every prompt of the case's slice once."""
        fn, prompts = self.decode_fn(case), self.prompts(case.slice).ids
        return [fn(i, p) for i, p in enumerate(prompts)]

    def benchmark_baseline(self, case: Case, benchmark: Any) -> CaseRun:
        """Time the verifier-only baseline of a slice; its run is kept for every draft case of the slice."""
        timing, fn = self.config.timing, self.decode_fn(case)
        prompts = self.prompts(case.slice).ids
        rounds: list[list[DecodeResult]] = []

        def target() -> None:
            rounds.append([fn(i, p) for i, p in enumerate(prompts)])

        benchmark.pedantic(target, rounds=timing.rounds, warmup_rounds=timing.warmup_rounds, iterations=1)
        run = CaseRun(case, rounds[timing.warmup_rounds:])
        self._baselines[case.slice] = run
        return run

    def baseline_run(self, slice_name: str) -> CaseRun:
        """The slice's baseline run: from its own benchmark case when that ran, else one untimed pass."""
        if slice_name not in self._baselines:
            case = Case(None, 0, slice_name)
            self._baselines[slice_name] = CaseRun(case, [self.run_pass(case)])
        return self._baselines[slice_name]

    def benchmark_case(self, case: Case, benchmark: Any) -> CaseRun:
        """Time a draft case with a verifier-only pass before every round (in pedantic's untimed setup).

        Pairing the rounds makes machine drift hit both sides, so per-round speedups can be compared.
        """
        timing = self.config.timing
        fn, base_fn = self.decode_fn(case), self.decode_fn(case.baseline)
        prompts = self.prompts(case.slice).ids
        rounds: list[list[DecodeResult]] = []
        base_rounds: list[list[DecodeResult]] = []

        def setup() -> None:
            base_rounds.append([base_fn(i, p) for i, p in enumerate(prompts)])

        def target() -> None:
            rounds.append([fn(i, p) for i, p in enumerate(prompts)])

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
            if case.draft.drafter == "prompt-lookup":
                drafter = PromptLookupDrafter(max_ngram=case.draft.max_ngram, min_ngram=case.draft.min_ngram)
                audit = audit_drafter(drafter, prompt, result.tokens, k=case.k, max_new_tokens=gen.max_new_tokens)
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
