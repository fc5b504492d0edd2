"""The one seam through which a test-only plugin may change what a suite run does (tests/plugins/inject_faults.py).

A normal run uses :class:`Interventions` itself: every method is the identity. The production runner has no
branch on fault switches; it only calls these methods.
"""

from __future__ import annotations

from collections.abc import Callable

from specperf.config.cases import Case
from specperf.engine.drafters.base import Drafter
from specperf.records import DecodeResult

GroupFn = Callable[[int, list[list[int]]], list[DecodeResult]]  # (first request index, prompts) -> results


class Interventions:
    """Identity hooks around drafters and decoding; a plugin's ``pytest_specperf_interventions`` may return another."""

    # True when wrap_drafter changes proposals, so the audit must replay the wrapped drafter, not the bare model.
    replays_drafter: bool = False

    def wrap_drafter(self, drafter: Drafter, vocab: int) -> Drafter:
        return drafter

    def wrap_decode(self, case: Case, fn: GroupFn) -> GroupFn:
        return fn

    def describe(self) -> str | None:
        """What is injected (recorded as ``injected_faults``), or None for an honest run."""
        return None
