"""Case execution: build a case's drafter and decode function once, then run its timed rounds.

pytest-agnostic: the plugin hands it a pytest-benchmark fixture; everything else lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from specperf.bench.interventions import GroupFn, Interventions
from specperf.bench.store import ModelStore
from specperf.config import DraftSpec, GenerationSpec, SuiteConfig, TimingSpec
from specperf.config.cases import Case
from specperf.engine.batch import decode_batch
from specperf.engine.decode import decode
from specperf.engine.drafters.base import Drafter
from specperf.engine.drafters.model import ModelDrafter
from specperf.engine.drafters.prompt_lookup import PromptLookupDrafter
from specperf.engine.forward import vocab_size
from specperf.engine.hf import hf_assisted_decode
from specperf.records import DecodeResult

if TYPE_CHECKING:
    from specperf.bench.serving_cases import ServingCases
    from specperf.bench.vllm_cases import VllmCases


@dataclass
class TimedRuns:
    """The rounds a case produced (warm-up rounds dropped), and whether pytest-benchmark timed them."""

    rounds: list[list[DecodeResult]]
    baseline_rounds: list[list[DecodeResult]] = field(default_factory=list)
    timed: bool = True


class CaseRunner:
    """Runs cases against a :class:`ModelStore`; one drafter per draft name, reused by every case and request.

    ``config``: the suite the store was built from; its ``generation`` and ``timing`` sections set how cases decode
    and how many rounds they time.
    """

    def __init__(self, store: ModelStore, config: SuiteConfig, interventions: Interventions | None = None) -> None:
        self.store = store
        self.config = config
        self.generation: GenerationSpec = config.generation
        self.timing: TimingSpec = config.timing
        self.interventions = interventions or Interventions()
        self._drafters: dict[str, Drafter] = {}
        self._vllm: VllmCases | None = None
        self._serving: ServingCases | None = None
        self._references: dict[str, list[DecodeResult]] = {}

    @property
    def vllm(self) -> VllmCases:
        """The vLLM side, created by the first vLLM case (vLLM is imported only then)."""
        if self._vllm is None:
            from specperf.bench.vllm_cases import VllmCases

            self._vllm = VllmCases(self.config, self.store.device)
        return self._vllm

    @property
    def serving(self) -> ServingCases:
        """The servers of serving mode (engine: server), created by the first server case."""
        if self._serving is None:
            from specperf.bench.serving_cases import ServingCases

            tokenizer = self.store.verifier.tokenizer
            self._serving = ServingCases(self.config, str(self.store.device),
                                         lambda text: list(tokenizer.encode(text, add_special_tokens=False)))
        return self._serving

    def close(self) -> None:
        """Shut down every engine and server the session started (vLLM's run in their own processes)."""
        try:
            if self._serving is not None:
                self._serving.close()
                self._serving = None
        finally:
            if self._vllm is not None:
                self._vllm.close()
                self._vllm = None

    def drafter(self, spec: DraftSpec) -> Drafter:
        if spec.name not in self._drafters:
            self._drafters[spec.name] = self.new_drafter(spec)
        return self._drafters[spec.name]

    def new_drafter(self, spec: DraftSpec) -> Drafter:
        if spec.drafter == "prompt-lookup":
            drafter: Drafter = PromptLookupDrafter(max_ngram=spec.max_ngram, min_ngram=spec.min_ngram)
        else:
            assert spec.model is not None  # the config requires a model for drafter 'model'
            drafter = ModelDrafter(self.store.model(spec.model).forward, label=spec.model)
        return self.interventions.wrap_drafter(drafter, vocab_size(self.store.verifier.model))

    def forget_request_state(self) -> None:
        """Drop the drafters (and the caches they hold); they are rebuilt on next use. Models stay loaded."""
        self._drafters.clear()

    def decode_fn(self, case: Case) -> GroupFn:
        """A function decoding a group of the slice's requests together (first index, prompts); built once, so
        the timed loop only decodes. Batch size 1 uses the batch-1 engine, whose numbers every baseline JSON holds."""
        gen, verifier = self.generation, self.store.verifier
        common: dict[str, Any] = dict(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
                                      eos_token_id=self.store.eos())
        if case.draft is not None and case.draft.engine == "vllm":
            return self.interventions.wrap_decode(case, self.vllm.group_fn(case, speculative=True))
        drafter = self.drafter(case.draft) if case.draft is not None and case.draft.engine != "hf" else None
        if case.batch_size > 1:
            def group(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
                return decode_batch(verifier.forward, prompts, drafter=drafter, k=case.k or 1, seed=gen.seed + i,
                                    **common)
        elif case.draft is None or drafter is not None:
            def group(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
                return [decode(verifier.forward, prompts[0], drafter=drafter, k=case.k or 1, seed=gen.seed + i,
                               **common)]
        else:
            assert case.draft.model is not None
            draft_model = self.store.model(case.draft.model).model

            def group(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
                return [hf_assisted_decode(verifier.model, prompts[0], draft_model, k=case.k, seed=gen.seed + i,
                                           **common)]
        return self.interventions.wrap_decode(case, group)

    def pass_fn(self, case: Case) -> Callable[[], list[DecodeResult]]:
        """Decode every prompt of the case's slice once, batch_size requests at a time, in slice order (a server
        case: one timed load run at its level on its speculative server)."""
        if case.draft is not None and case.draft.engine == "server":
            return self.serving.pass_fn(case, self.store.prompts(case.slice).ids, speculative=True)
        return self._pass(case, self.decode_fn(case))

    def baseline_pass_fn(self, case: Case) -> Callable[[], list[DecodeResult]]:
        """The verifier-only pass a draft case is paired with: the same engine without a draft (for vLLM, an
        engine with the same arguments and no speculative config)."""
        if case.draft is not None and case.draft.engine == "vllm":
            return self._pass(case, self.vllm.group_fn(case, speculative=False))
        if case.draft is not None and case.draft.engine == "server":
            return self.serving.pass_fn(case, self.store.prompts(case.slice).ids, speculative=False)
        return self.pass_fn(case.baseline)

    def _pass(self, case: Case, fn: GroupFn) -> Callable[[], list[DecodeResult]]:
        prompts, size = self.store.prompts(case.slice).ids, case.batch_size
        groups = [(i, prompts[i : i + size]) for i in range(0, len(prompts), size)]
        return lambda: [r for i, group in groups for r in fn(i, group)]

    def reference(self, slice_name: str) -> list[DecodeResult]:
        """specperf's verifier-only decoding of a slice, once per session: the tokens every engine must match."""
        if slice_name not in self._references:
            self._references[slice_name] = self.pass_fn(Case(None, 0, slice_name))()
        return self._references[slice_name]

    def _kept(self, rounds: list[list[DecodeResult]], benchmark: Any) -> list[list[DecodeResult]]:
        """The timed rounds. --benchmark-disable runs the target once, with no warm-up: that one round is kept."""
        return rounds if benchmark.disabled else rounds[self.timing.warmup_rounds:]

    def benchmark_baseline(self, case: Case, benchmark: Any) -> TimedRuns:
        """Time the verifier-only baseline of a slice."""
        timing, decode_pass = self.timing, self.pass_fn(case)
        rounds: list[list[DecodeResult]] = []

        def target() -> None:
            rounds.append(decode_pass())

        benchmark.pedantic(target, rounds=timing.rounds, warmup_rounds=timing.warmup_rounds, iterations=1)
        return TimedRuns(self._kept(rounds, benchmark), timed=not benchmark.disabled)

    def benchmark_case(self, case: Case, benchmark: Any) -> TimedRuns:
        """Time a draft case with a verifier-only pass before every round (in pedantic's untimed setup).

        Pairing the rounds makes machine drift hit both sides, so per-round speedups can be compared.
        """
        timing = self.timing
        baseline_pass, decode_pass = self.baseline_pass_fn(case), self.pass_fn(case)
        rounds: list[list[DecodeResult]] = []
        base_rounds: list[list[DecodeResult]] = []

        def setup() -> None:
            base_rounds.append(baseline_pass())

        def target() -> None:
            rounds.append(decode_pass())

        benchmark.pedantic(target, setup=setup, rounds=timing.rounds, warmup_rounds=timing.warmup_rounds,
                           iterations=1)
        return TimedRuns(self._kept(rounds, benchmark), self._kept(base_rounds, benchmark),
                         timed=not benchmark.disabled)
