"""Where a request's wall time goes: verifier forwards, draft forwards (or the lookup of a model-free drafter), and
everything else (the loop's host work: building blocks, verification, rollback, syncs, bookkeeping).

Measured in a separate, untimed pass over the case's slice after its timed rounds, so the instrumentation never
touches what the timed rounds measure. Forward hooks on the top-level modules time each model call (on CUDA the
clock synchronizes first, so queued kernels are charged to the call that queued them); a model-free drafter's
``propose`` is timed by wrapping it for the pass. The hooks see transformers' assisted generation too, so the same
split exists for ``engine: hf`` cases.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from specperf.engine.drafters.base import Drafter
from specperf.engine.forward import ModelForward, model_device
from specperf.engine.timing import Clock
from specperf.records import DecodeResult, TimeSplit, pass_wall


class _Meter:
    """Accumulates the seconds spent inside calls, read with a device-honest clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.seconds = 0.0
        self._started: float | None = None

    def start(self, *_: Any) -> None:
        self._started = self.clock.now()

    def stop(self, *_: Any) -> None:
        if self._started is not None:
            self.seconds += self.clock.now() - self._started
            self._started = None


@contextlib.contextmanager
def _timed_module(module: torch.nn.Module | None, meter: _Meter) -> Iterator[None]:
    if module is None:
        yield
        return
    pre = module.register_forward_pre_hook(meter.start)
    post = module.register_forward_hook(meter.stop)
    try:
        yield
    finally:
        pre.remove()
        post.remove()


@contextlib.contextmanager
def _timed_propose(drafter: Drafter | None, meter: _Meter) -> Iterator[None]:
    """Time a model-free drafter's ``propose`` (prompt lookup) for the pass, then restore it."""
    if drafter is None:
        yield
        return
    original = drafter.propose

    @functools.wraps(original)
    def propose(*args: Any, **kwargs: Any) -> Any:
        meter.start()
        try:
            return original(*args, **kwargs)
        finally:
            meter.stop()

    drafter.propose = propose  # type: ignore[method-assign]  # an instance attribute, removed below
    try:
        yield
    finally:
        del drafter.propose


def measure_split(run_pass: Callable[[], list[DecodeResult]], *, verifier: ModelForward,
                  draft: ModelForward | None, lookup: Drafter | None, batch_size: int) -> TimeSplit:
    """Run one instrumented pass; return its wall and the seconds inside verifier and draft calls.

    ``verifier`` and ``draft``: the forwards ``run_pass`` runs the models with (their lean forwards are hooked).
    """
    clock = Clock(model_device(verifier.model))
    verifier_meter, draft_meter = _Meter(clock), _Meter(clock)
    draft_model, draft_lean = (None, None) if draft is None else (draft.model, draft.lean)
    # A model runs through its lean forward (specperf's loop) or its own __call__ (transformers' assisted
    # generation), never both in one call, so hooking both never counts a call twice.
    with _timed_module(verifier.model, verifier_meter), _timed_module(draft_model, draft_meter), \
            _timed_module(verifier.lean, verifier_meter), _timed_module(draft_lean, draft_meter), \
            _timed_propose(lookup, draft_meter):
        results = run_pass()
    return TimeSplit(wall_s=pass_wall(results, batch_size), verifier_s=verifier_meter.seconds,
                     draft_s=draft_meter.seconds, new_tokens=sum(r.new_tokens for r in results))
