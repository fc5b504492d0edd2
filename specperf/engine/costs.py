"""Per-forward costs of a model at a fixed context, measured outside any timed region."""

from __future__ import annotations

import statistics

import torch

from specperf.engine.cache import rollback
from specperf.engine.forward import forward, model_device, new_cache
from specperf.engine.timing import Clock


@torch.inference_mode()
def step_seconds(model: torch.nn.Module, prompt_ids: list[int], n_tokens: int = 1, reps: int = 30) -> float:
    """Median seconds of one cached forward over ``n_tokens`` new tokens after ``prompt_ids``.

    The cache is rolled back after each rep, so every rep sees the same context length.
    """
    device = model_device(model)
    clock = Clock(device)
    cache = new_cache()
    forward(model, torch.tensor([prompt_ids], device=device), cache, 1)
    block = torch.tensor([prompt_ids[-n_tokens:]], device=device)  # (1, n_tokens)
    times = []
    for _ in range(reps + 2):
        start = clock.now()
        forward(model, block, cache, n_tokens)
        times.append(clock.now() - start)
        rollback(cache, n_tokens)
    return statistics.median(times[2:])  # the first reps warm allocator and kernels


def prefill_seconds(model: torch.nn.Module, prompt_ids: list[int], reps: int = 5) -> float:
    """Median seconds of the forward over the whole prompt into an empty cache (what a request's first call costs)."""
    return step_seconds(model, prompt_ids, len(prompt_ids), reps=reps)
