"""Step costs (one cached forward of a model over n tokens), measured once per session outside any timed region."""

from __future__ import annotations

from specperf.bench.store import ModelStore
from specperf.config.cases import Case
from specperf.config.schema import PREDICT_MAX_K
from specperf.engine.costs import prefill_seconds, step_seconds
from specperf.records import StepCosts

STEP_REPS = 30  # the case's own costs: c and v(k+1) of the theory table
CURVE_REPS = 10  # v(k+1) at each k of the best-k prediction: one curve per session, read as ratios
PREFILL_REPS = 5  # each prompt's prefill: tens of milliseconds each, steadier than a single-token forward


class StepCostMeter:
    """Median seconds of one cached forward of a model over n tokens at a slice's first prompt, cached per
    (model, n tokens)."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._seconds: dict[tuple[str, int, int], float] = {}
        self._prefills: dict[tuple[str, str], tuple[float, ...]] = {}

    def seconds(self, model_name: str, n_tokens: int, slice_name: str, reps: int = STEP_REPS) -> float:
        key = (model_name, n_tokens, reps)
        if key not in self._seconds:
            prompt = self.store.prompts(slice_name).ids[0]
            self._seconds[key] = step_seconds(self.store.model(model_name).model, prompt, n_tokens, reps=reps)
        return self._seconds[key]

    def prefills(self, model_name: str, slice_name: str) -> tuple[float, ...]:
        """Median seconds of the prefill of each prompt of the slice, cached per (model, slice)."""
        key = (model_name, slice_name)
        if key not in self._prefills:
            model = self.store.model(model_name).model
            self._prefills[key] = tuple(prefill_seconds(model, ids, PREFILL_REPS)
                                        for ids in self.store.prompts(slice_name).ids)
        return self._prefills[key]

    def case_costs(self, case: Case) -> StepCosts | None:
        """v(1), the verifier over k + 1 tokens (and over j + 1 for every j the best-k prediction covers), and one
        draft forward, and each prompt's prefill by the verifier and the draft; None at batch size > 1."""
        if case.batch_size > 1 or case.draft is None:
            return None
        verifier = self.store.config.verifier
        draft = case.draft.model if case.draft.drafter == "model" else None
        return StepCosts(
            verifier_step_s=self.seconds(verifier, 1, case.slice),
            verify_block_s=self.seconds(verifier, case.k + 1, case.slice),
            draft_step_s=self.seconds(draft, 1, case.slice) if draft is not None else 0.0,
            verify_curve_s=tuple(self.seconds(verifier, k + 1, case.slice, CURVE_REPS)
                                 for k in range(1, PREDICT_MAX_K + 1)),
            verifier_prefill_s=self.prefills(verifier, case.slice),
            draft_prefill_s=self.prefills(draft, case.slice) if draft is not None else (),
        )
