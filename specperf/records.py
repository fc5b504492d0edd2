"""The records handed from the stages that run models (engine, bench) to the pure stages (analysis, output).

Plain dataclasses of Python numbers: no torch, so analysis and output can import them.
"""

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


def pass_wall(results: list[DecodeResult], batch_size: int) -> float:
    """Wall seconds of one pass over a slice: the sum over its batches of the batch's wall (its slowest row's)."""
    return sum(max(r.wall_s for r in results[i : i + batch_size]) for i in range(0, len(results), batch_size))


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first position where two token sequences differ (or the shorter one's end); None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass
class Audit:
    """What the replay of one request found."""

    matches: list[bool]  # matches[i]: draft argmax == emitted token i (i >= 1; token 0 comes from the prefill)
    proposed: int
    accepted: int
    accept_counts: list[int]
    calls: int = 0  # verifier calls (prefill included) the replayed loop makes; 0 when not counted
    # Positions where the engine's draft decided a near-tie the other way from the replay: the fewest that explain
    # the engine's counters (0 when they equal the replay's; always 0 in float32). None when not checked.
    near_ties: int | None = None
    # [j]: the replayed loop's verify steps (the prefill excluded) that drafted exactly j tokens, a verifier forward
    # over j + 1 tokens; empty when not counted (as ``calls``).
    drafted: list[int] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        return sum(self.matches) / len(self.matches) if self.matches else None

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None


@dataclass(frozen=True)
class StepCosts:
    """Median seconds of cached forwards, measured interleaved in the loops' order (bench/measure.py) at the slice's
    decode context (its first prompt + max_new_tokens // 2): the verifier over 1 and over k + 1 tokens, and the draft
    over 1 token (a block's k draft forwards on one cache, over k; 0 for a model-free drafter); and each prompt's
    prefill, by verifier and draft."""

    verifier_step_s: float  # v(1)
    verify_block_s: float  # the verifier over k + 1 tokens
    draft_step_s: float  # one draft forward; 0.0 without a draft model
    verify_curve_s: tuple[float, ...] = ()  # [j]: the verifier over j + 2 tokens (k = j + 1), k = 1..PREDICT_MAX_K
    verifier_prefill_s: tuple[float, ...] = ()  # [i]: the verifier's forward over the slice's prompt i
    draft_prefill_s: tuple[float, ...] = ()  # [i]: the draft's forward over prompt i; () without a draft model


@dataclass(frozen=True)
class TimeSplit:
    """One untimed instrumented pass over a case's slice: its wall (the sum of its batches' walls) and the seconds
    inside verifier forwards and draft forwards (or a model-free drafter's lookup); the rest is the loop's own."""

    wall_s: float
    verifier_s: float
    draft_s: float  # 0.0 for the verifier-only baseline
    new_tokens: int

    @property
    def other_s(self) -> float:
        return max(0.0, self.wall_s - self.verifier_s - self.draft_s)


@dataclass(frozen=True)
class RunContext:
    """What a case ran on: the suite's verifier, device, dtype and sampling, and any injected faults."""

    verifier: str
    device: str
    dtype: str
    temperature: float
    injected_faults: str | None = None  # a test-only plugin's description; None in every honest run


@dataclass
class CaseRecord:
    """Everything measured for one case, as plain numbers: the input of :mod:`specperf.analysis.extract`.

    ``rounds`` and ``baseline_rounds`` hold the timed rounds (warm-up dropped), each a list of the slice's requests
    in slice order; with pytest-benchmark's ``--benchmark-disable`` there is one untimed round and ``timed`` is
    False. Model-derived figures (audit, divergence margins, step costs, parameter counts) were computed by
    :mod:`specperf.bench`.
    """

    case_id: str
    slice: str
    k: int
    batch_size: int
    draft: str | None  # None for the verifier-only baseline
    draft_model: str | None
    drafter: str | None
    engine: str
    context: RunContext
    rounds: list[list[DecodeResult]]
    baseline_rounds: list[list[DecodeResult]] = field(default_factory=list)
    audits: list[Audit] = field(default_factory=list)
    n_shortened: int = 0  # prompts whose abstract was cut to fit the context window
    verifier_params: int = 0
    draft_params: int = 0  # 0 without a draft model
    first_divergence: list[int | None] = field(default_factory=list)  # per request of the last round vs baseline
    divergence_margins: list[float | None] = field(default_factory=list)  # verifier logit gap at each divergence
    divergence_magnitudes: list[float | None] = field(default_factory=list)  # the larger |logit| of that gap's two
    step_costs: StepCosts | None = None  # None at batch size > 1 (costs are measured at batch 1)
    timed: bool = True  # False: --benchmark-disable ran each pass once, untimed
    time_split: TimeSplit | None = None  # where the wall time goes; None for vLLM cases (other processes)
    # Greedy replay over the acceptance slice (dataset.acceptance_slice, else the case's slice): the draft's audit
    # along the verifier's own output at the case's k, and for k = 1..PREDICT_MAX_K the (new tokens, verifier
    # calls) that specperf's loop would need. Empty when sampling, or for a drafter the audit cannot replay.
    replay_slice: str | None = None
    replay_audits: list[Audit] = field(default_factory=list)
    calls_by_k: dict[int, tuple[int, int]] = field(default_factory=dict)
    # For the same k: [j] = the replayed verify steps (prefills excluded) that drafted exactly j tokens, summed over
    # the slice. Empty when not recorded: the k prediction then prices every step at a full block.
    drafted_by_k: dict[int, list[int]] = field(default_factory=dict)
    # Serving mode: the load level's figures (specperf.analysis.serving keys), computed by the bench; None otherwise.
    serving: dict[str, object] | None = None
