"""Per-forward costs of a model at a fixed context, measured outside any timed region.

A ratio of two costs (v(k+1) / v(1), c / v(1)) is only as good as the two measurements are simultaneous: on a shared
machine whose speed drifts within a run, costs measured one after the other carry that drift into their ratio.
``probe_seconds`` therefore measures several forwards interleaved, one of each per round, as the timed rounds
interleave the baseline with the speculative loop.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from specperf.engine.cache import RollbackCache, rollback
from specperf.engine.forward import ModelForward, as_forward, model_device, new_cache
from specperf.engine.timing import Clock

WARMUP = 2  # untimed calls per probe first: they warm the allocator and the kernels


@dataclass(frozen=True)
class Probe:
    """One cached forward of a model (``forward``, the forward the engine runs it with) over ``block`` after
    ``context`` (an empty context: the block's prefill).

    Probes of one model with the same context share one cache, as a loop's forwards do. ``chain``: that many
    forwards of the block, each appended after the one before (as a draft model drafts a block), timed as one sample.
    ``every``: take a sample only in every ``every``-th round (expensive probes, such as a prefill). ``keep``: logits
    projected onto the vocabulary (0: every position of the block), as the engine keeps them.
    """

    forward: ModelForward
    context: tuple[int, ...]
    block: tuple[int, ...]
    every: int = 1
    chain: int = 1
    keep: int = 0

    @classmethod
    def step(cls, model: torch.nn.Module | ModelForward, context: tuple[int, ...], n_tokens: int, **kw: int) -> Probe:
        """A forward over ``n_tokens`` new tokens (the context's last ones again) after ``context``."""
        if not 1 <= n_tokens <= len(context):
            raise ValueError(f"a step probe needs 1..{len(context)} new tokens after its context, got {n_tokens}")
        return cls(as_forward(model), context, context[-n_tokens:], **kw)

    @classmethod
    def prefill(cls, model: torch.nn.Module | ModelForward, prompt: tuple[int, ...], **kw: int) -> Probe:
        """The prompt's forward into an empty cache, keeping the last logit only, as a request's first call does."""
        return cls(as_forward(model), (), prompt, keep=1, **kw)


class ArmedProbe:
    """A probe with its (shared) cache filled with the context, ready to run and roll back."""

    def __init__(self, probe: Probe, caches: dict[tuple[int, tuple[int, ...]], RollbackCache]) -> None:
        device = model_device(probe.forward.model)
        self.probe = probe
        key = (id(probe.forward.model), probe.context)
        if key not in caches:
            caches[key] = new_cache()
            if probe.context:
                probe.forward(torch.tensor([probe.context], device=device), caches[key], 1)
        self.cache = caches[key]
        self.block = torch.tensor([probe.block], device=device)  # (1, n)

    def run(self) -> None:
        n = self.block.shape[1]
        for _ in range(self.probe.chain):
            self.probe.forward(self.block, self.cache, self.probe.keep or n)
        rollback(self.cache, n * self.probe.chain)


@torch.inference_mode()
def probe_seconds(probes: Sequence[Probe], reps: int = 30) -> list[float]:
    """Median seconds of each probe's forward (of its chain of forwards), the probes interleaved round by round
    (``reps`` rounds), so that drift of the machine hits them alike and their ratios hold. Every cache is rolled back
    after each call, so every sample sees the same context."""
    if not probes:
        return []
    clock = Clock(model_device(probes[0].forward.model))
    caches: dict[tuple[int, tuple[int, ...]], RollbackCache] = {}
    armed = [ArmedProbe(p, caches) for p in probes]
    for a in armed:
        for _ in range(WARMUP):
            a.run()
    samples: list[list[float]] = [[] for _ in armed]
    for rep in range(reps):
        for a, times in zip(armed, samples, strict=True):
            if rep % a.probe.every == 0:
                start = clock.now()
                a.run()
                times.append(clock.now() - start)
    return [statistics.median(times) for times in samples]


def step_seconds(model: torch.nn.Module | ModelForward, prompt_ids: list[int], n_tokens: int = 1,
                 reps: int = 30) -> float:
    """Median seconds of one cached forward over ``n_tokens`` new tokens after ``prompt_ids``."""
    return probe_seconds([Probe.step(model, tuple(prompt_ids), n_tokens)], reps)[0]
