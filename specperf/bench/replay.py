"""Greedy acceptance over a real sample: one teacher-forced replay of each draft along the verifier's own output.

For greedy decoding, acceptance at block size k is fully determined by the verifier's greedy tokens and the draft's
predictions along them, so the acceptance slice (``dataset.acceptance_slice``, e.g. 32 prompts) needs no
speculative decoding at all: the verifier decodes each prompt once per session (specperf's verifier-only loop,
shared by every draft), and each draft is replayed over those tokens. The same replay gives, for every k from 1 to
PREDICT_MAX_K, the verifier calls specperf's loop would make, and how many tokens each of them drafted: the input of
the best-k prediction.
"""

from __future__ import annotations

from specperf.bench.audit import audit_case
from specperf.bench.block_walk import block_drafted
from specperf.bench.runner import CaseRunner
from specperf.config import DatasetSpec, GenerationSpec
from specperf.config.cases import Case
from specperf.config.schema import PREDICT_MAX_K
from specperf.records import Audit

Replay = tuple[str, list[Audit], dict[int, tuple[int, int]]]  # (slice, audits at the case's k, k -> (tokens, calls))
Drafted = dict[int, list[int]]  # k -> [j]: the replay's verify steps (prefills excluded) that drafted exactly j tokens


class Replayer:
    """Replays per (draft, k, acceptance slice), cached for the session (a case's batch sizes share one).

    ``dataset`` names the acceptance slice; ``generation`` says whether decoding is greedy and how long it runs.
    """

    def __init__(self, runner: CaseRunner, dataset: DatasetSpec, generation: GenerationSpec) -> None:
        self.runner = runner
        self.acceptance_slice = dataset.acceptance_slice
        self.generation = generation
        self._done: dict[tuple[str, int, str], tuple[Replay, Drafted]] = {}

    def slice_for(self, case: Case) -> str:
        return self.acceptance_slice or case.slice

    def case(self, case: Case) -> Replay | None:
        """The case's replay; None when sampling (acceptance then depends on the draws: the timed requests' counters
        are the figures)."""
        assert case.draft is not None
        if self.generation.temperature > 0:
            return None
        return self._cached(case)[0]

    def drafted(self, case: Case) -> Drafted:
        """For each k of the case's replay, how many of its verify steps drafted j tokens (:data:`Drafted`); empty
        when there is no replay."""
        assert case.draft is not None
        return {} if self.generation.temperature > 0 else self._cached(case)[1]

    def _cached(self, case: Case) -> tuple[Replay, Drafted]:
        assert case.draft is not None
        key = (case.draft.name, case.k, self.slice_for(case))
        if key not in self._done:
            self._done[key] = self._replay(case, key[2])
        return self._done[key]

    def _replay(self, case: Case, slice_name: str) -> tuple[Replay, Drafted]:
        assert case.draft is not None
        runner = self.runner
        reference = runner.reference(slice_name)
        prompts = runner.store.prompts(slice_name).ids
        audits = audit_case(runner, case, reference, prompts=prompts, check=False)
        tokens = sum(r.new_tokens for r in reference)
        max_new = self.generation.max_new_tokens
        calls: dict[int, tuple[int, int]] = {}
        drafted: Drafted = {}
        # A draft model's teacher-forced matches serve every k; a drafter whose proposal depends on the block
        # structure (prompt lookup, or a wrapped drafter) is replayed at each k.
        along_sequence = case.draft.drafter == "model" and not runner.interventions.replays_drafter
        for k in range(1, PREDICT_MAX_K + 1):
            if along_sequence:
                per_request = [block_drafted(a.matches, k, max_new) for a, r in zip(audits, reference) if r.tokens]
            else:
                at_k = audits if k == case.k else audit_case(runner, case, reference, prompts=prompts, k=k,
                                                             check=False)
                per_request = [a.drafted for a in at_k if a.drafted]
            drafted[k] = [sum(column) for column in zip(*per_request)] if per_request else [0] * (k + 1)
            calls[k] = (tokens, len(per_request) + sum(drafted[k]))
        return (slice_name, audits, calls), drafted
