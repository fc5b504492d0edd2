"""Step costs (cached forwards of a model over n tokens), measured outside any timed region and cached per session.

The costs of one case (v(1), v(k+1), one draft forward, each prompt's prefill by verifier and draft) are measured
together, interleaved round by round, because the bound reads them as ratios. Each round runs the forwards in the
order the loops run them: two verifier steps back to back (the baseline's pattern; the second is v(1)), then a
speculative step's k draft forwards and its verify forward. The order matters on a CPU: the models evict each other
from the core's cache, so a verify forward right after k draft forwards costs more than one after another verify
forward, and the first draft forward of a block more than the others. Forwards measured in the loops' order, without
the loops' host work, make a bound whose gap to the measured speedup is that host work plus what probes cannot
reproduce (docs: Results). The verify-cost curve of the best-k prediction is
measured once per slice, its sizes interleaved too.
"""

from __future__ import annotations

import torch

from specperf.bench.store import ModelStore
from specperf.config import GenerationSpec, TimingSpec
from specperf.config.cases import Case
from specperf.config.schema import PREDICT_MAX_K
from specperf.engine.costs import Probe, probe_seconds
from specperf.engine.forward import context_window
from specperf.records import StepCosts

PREFILL_EVERY = 6  # a prefill (tens of milliseconds) is sampled every 6th round: 5 samples in 30 rounds
CURVE_SHARE = 3  # the best-k prediction's curve (v(k+1) at every k, read as ratios) gets a third of the rounds


class StepCostMeter:
    """Median seconds of cached forwards at a slice's prompts, cached per (draft, k, slice) and per slice.

    ``generation.max_new_tokens`` places the decode context; ``timing.cost_rounds`` is how many rounds probes run.
    """

    def __init__(self, store: ModelStore, generation: GenerationSpec, timing: TimingSpec) -> None:
        self.store = store
        self.max_new_tokens = generation.max_new_tokens
        self.cost_rounds = timing.cost_rounds
        self._cases: dict[tuple[str | None, int, str], StepCosts] = {}
        self._curves: dict[str, tuple[float, ...]] = {}

    def decode_context(self, slice_name: str, room: int, models: list[torch.nn.Module]) -> tuple[int, ...]:
        """The context of a typical decode step: the slice's first prompt and half of ``max_new_tokens`` more (its
        own tokens again). Attention grows with the context, so a verify forward at the bare prompt costs less than
        one halfway through the request. ``room``: the most tokens a probe appends; the context
        leaves that much of every model's window free, and holds at least that many tokens (a probe's block repeats
        the context's last ones)."""
        prompt = tuple(self.store.prompts(slice_name).ids[0])
        length = len(prompt) + self.max_new_tokens // 2
        windows = [w for w in map(context_window, models) if w is not None]
        if windows:
            length = min(length, min(windows) - room)
        length = max(length, room)
        return (prompt * (length // len(prompt) + 1))[:length]

    def curve(self, slice_name: str) -> tuple[float, ...]:
        """[j]: the verifier over j + 2 tokens (k = j + 1) at the decode context, k = 1..PREDICT_MAX_K."""
        if slice_name not in self._curves:
            verifier = self.store.verifier.forward
            prompt = self.decode_context(slice_name, PREDICT_MAX_K + 1, [verifier.model])
            probes = [Probe.step(verifier, prompt, k + 1) for k in range(1, PREDICT_MAX_K + 1)]
            rounds = max(1, self.cost_rounds // CURVE_SHARE)
            self._curves[slice_name] = tuple(probe_seconds(probes, rounds))
        return self._curves[slice_name]

    def case_costs(self, case: Case) -> StepCosts | None:
        """v(1) and the verifier over k + 1 tokens at the decode context, one draft forward there, and each
        prompt's prefill by the verifier and the draft, all interleaved; None at batch size > 1."""
        if case.batch_size > 1 or case.draft is None:
            return None
        draft_name = case.draft.model if case.draft.drafter == "model" else None
        key = (draft_name, case.k, case.slice)
        if key not in self._cases:
            self._cases[key] = self._measure(draft_name, case.k, case.slice)
        return self._cases[key]

    def _measure(self, draft_name: str | None, k: int, slice_name: str) -> StepCosts:
        verifier = self.store.verifier.forward
        draft = self.store.model(draft_name).forward if draft_name is not None else None
        prompts = [tuple(ids) for ids in self.store.prompts(slice_name).ids]
        first = self.decode_context(slice_name, k + 1, [verifier.model] if draft is None else
                                    [verifier.model, draft.model])
        drafts = [Probe.step(draft, first, 1, chain=k)] if draft is not None else []
        # One round: v(1) twice (the second is the sample), a block's k draft forwards, v(k+1), then every 6th round
        # the prefills. A model's steps share one cache, as in the loops.
        v1 = Probe.step(verifier, first, 1)
        probes = [v1, v1, *drafts, Probe.step(verifier, first, k + 1)]
        probes += [Probe.prefill(verifier, p, every=PREFILL_EVERY) for p in prompts]
        if draft is not None:
            probes += [Probe.prefill(draft, p, every=PREFILL_EVERY) for p in prompts]
        seconds = probe_seconds(probes, self.cost_rounds)
        step, n = 2 + len(drafts), len(prompts)
        return StepCosts(
            verifier_step_s=seconds[1],
            verify_block_s=seconds[step],
            draft_step_s=seconds[2] / k if drafts else 0.0,
            verify_curve_s=self.curve(slice_name),
            verifier_prefill_s=tuple(seconds[step + 1 : step + 1 + n]),
            draft_prefill_s=tuple(seconds[step + 1 + n :]),
        )
