"""Per-request step counters of the speculative engine."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepCounters:
    """Accumulates the speculative engine's per-step counts for one request."""

    k: int
    proposed: int = 0
    accepted: int = 0
    accept_counts: list[int] = field(init=False)
    position_proposed: list[int] = field(init=False)
    position_accepted: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.accept_counts = [0] * (self.k + 1)
        self.position_proposed = [0] * self.k
        self.position_accepted = [0] * self.k

    def record(self, n_proposed: int, n_accepted: int) -> None:
        """One verification step that checked ``n_proposed`` draft tokens and accepted the first ``n_accepted``."""
        if n_proposed == 0:
            return  # a plain verifier step: nothing was drafted, so nothing to count as a draft outcome
        self.proposed += n_proposed
        self.accepted += n_accepted
        self.accept_counts[n_accepted] += 1
        for i in range(n_proposed):
            self.position_proposed[i] += 1
        for i in range(n_accepted):
            self.position_accepted[i] += 1
