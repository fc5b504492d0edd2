"""What one decode call returns: the tokens, the work it took, and its timings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DecodeResult:
    """Token-level record of one decoded prompt.

    Counts of draft tokens are ``None`` when the backend does not expose them (transformers' assisted generation
    hides how many tokens it proposed): unknown, never zero.
    """

    tokens: list[int]  # new token ids, prompt excluded
    k: int  # block size asked for (0 for verifier-only decoding)
    prompt_len: int
    verifier_calls: int  # verifier forward passes, prefill included
    draft_calls: int | None  # draft forward passes, draft prefill included (0 without a model drafter)
    verifier_tokens: int | None  # token positions the verifier processed (prompt + every verified block)
    draft_tokens: int | None  # token positions the draft model processed
    proposed: int | None  # draft tokens proposed
    accepted: int | None  # draft tokens accepted by the verifier and emitted
    accept_counts: list[int] | None  # [i] = verification steps that accepted exactly i draft tokens (gpt-fast)
    position_proposed: list[int] | None  # [i] = steps whose block had a draft token at position i
    position_accepted: list[int] | None  # [i] = steps whose draft token at position i was accepted
    wall_s: float  # request start to last token, seconds
    ttft_s: float  # request start to first new token, seconds
    stop_reason: str = "length"  # "length" (max_new_tokens) or "eos"
    backend: str = "specperf"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def acceptance_rate(self) -> float | None:
        """Draft acceptance as vLLM defines it: accepted / proposed draft tokens (None when unknown or no drafts)."""
        if self.proposed is None or self.accepted is None or self.proposed == 0:
            return None
        return self.accepted / self.proposed

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verifier forward pass (the prefill counts as a call)."""
        return self.new_tokens / self.verifier_calls if self.verifier_calls else 0.0

    @property
    def throughput(self) -> float:
        """New tokens per second of wall time."""
        return self.new_tokens / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def latency(self) -> float:
        """Seconds of wall time per new token."""
        return self.wall_s / self.new_tokens if self.new_tokens else float("nan")

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (wall - TTFT) / (new tokens - 1), as vLLM bench defines it."""
        if self.new_tokens < 2:
            return None
        return (self.wall_s - self.ttft_s) / (self.new_tokens - 1)


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
