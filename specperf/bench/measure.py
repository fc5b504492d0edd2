"""Step costs (one cached forward of a model over n tokens), measured once per session outside any timed region."""

from __future__ import annotations

from specperf.bench.store import ModelStore
from specperf.config.cases import Case
from specperf.config.schema import PREDICT_MAX_K
from specperf.engine.costs import step_seconds
from specperf.records import StepCosts

STEP_REPS = 30  # the case's own costs: c and v(k+1) of the theory table
CURVE_REPS = 10  # v(k+1) at each k of the best-k prediction: one curve per session, read as ratios


class StepCostMeter:
    """Median seconds of one cached forward of a model over n tokens at a slice's first prompt, cached per
    (model, n tokens)."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._seconds: dict[tuple[str, int, int], float] = {}

    def seconds(self, model_name: str, n_tokens: int, slice_name: str, reps: int = STEP_REPS) -> float:
        key = (model_name, n_tokens, reps)
        if key not in self._seconds:
            prompt = self.store.prompts(slice_name).ids[0]
            self._seconds[key] = step_seconds(self.store.model(model_name).model, prompt, n_tokens, reps=reps)
        return self._seconds[key]

    def case_costs(self, case: Case) -> StepCosts | None:
        """v(1), the verifier over k + 1 tokens (and over j + 1 for every j the best-k prediction covers), and one
        draft forward; None at batch size > 1."""
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
        )
