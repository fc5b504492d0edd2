"""The output contract: every key specperf writes into a case's pytest-benchmark ``extra_info``, with its type.

README's "extra_info fields" table documents the same keys; tests check that the table, this TypedDict and a real
``--benchmark-json`` file agree key for key, and that the values have these types and ranges. A key added in one
place and not the others fails a test.
"""

from __future__ import annotations

from typing import TypedDict

Number = float | int
Rates = list[float | None]


class BaseInfo(TypedDict):
    """What every case reports, the verifier-only baseline included."""

    case_id: str
    verifier: str
    draft: str | None  # None for a baseline
    engine: str
    slice: str
    device: str
    dtype: str
    k: int  # 0 for a baseline
    batch_size: int
    n_requests: int
    new_tokens: int
    n_shortened: int
    verifier_calls_per_token: float
    flops_per_token: float | None
    injected_faults: str | None
    latency_p50: float  # s/token
    latency_p95: float
    throughput_p50: float  # tok/s
    throughput_p95: float
    throughput_p5: float
    ttft_p50: float  # s
    tpot_p50: float | None
    throughput_aggregate: float
    round_s: list[float]
    time_verifier_per_token: float | None  # s/token, from the untimed instrumented pass (None for vLLM)
    time_draft_per_token: float | None
    time_other_per_token: float | None
    time_verifier_share: float | None  # of the instrumented pass's wall
    time_draft_share: float | None
    time_other_share: float | None


class DraftInfo(BaseInfo):
    """What a draft case adds."""

    draft_model: str | None  # None for prompt lookup
    drafter: str
    acceptance_mean: float | None
    acceptance_p50: float | None
    acceptance_p95: float | None
    acceptance_samples: int  # requests behind acceptance_mean/p50/p95
    acceptance_per_request: list[float]
    acceptance_sample_slice: str
    agreement_samples: int
    acceptance_aggregate: float | None
    audit_acceptance_aggregate: float | None
    replay_acceptance_aggregate: float | None
    audit_near_ties: int | None  # draft near-ties the engine decided the other way (None: not checked)
    agreement_mean: float | None
    agreement_p50: float | None
    agreement_p95: float | None
    alpha: float | None
    mean_accepted_length: float
    accept_counts: list[int] | None
    position_acceptance: Rates | None
    speedup: float
    speedup_aggregate: float
    speedup_rounds: list[float]
    baseline_latency_p50: float
    exact_match_rate: float
    first_divergence: list[int | None]
    flop_speedup: float | None
    divergence_margins: list[float | None]  # logits
    divergence_margin_steps: list[float | None]  # |margin| in steps of the dtype
    near_tie_tolerance: float  # steps of the dtype (0 in float32)
    exact_or_near_tie_rate: float
    exact_match_gated: float | None
    cost_ratio: float | None
    verify_cost: float | None
    expected_speedup: float | None
    efficiency: float | None
    speedup_bound: float | None
    bound_efficiency: float | None
    predicted_tokens_per_call_by_k: dict[str, float] | None
    predicted_speedup_by_k: dict[str, float] | None
    best_k: int | None


# Keys whose values are rates: each value (or each list item) lies in 0..1 when not None.
RATE_KEYS = ("acceptance_mean", "acceptance_p50", "acceptance_p95", "acceptance_aggregate",
             "audit_acceptance_aggregate", "replay_acceptance_aggregate", "acceptance_per_request",
             "agreement_mean", "agreement_p50", "agreement_p95", "alpha",
             "position_acceptance", "exact_match_rate", "exact_or_near_tie_rate", "exact_match_gated",
             "time_verifier_share", "time_draft_share", "time_other_share")


def contract_keys() -> set[str]:
    """Every key a draft case carries (a baseline carries those of :class:`BaseInfo`)."""
    return set(DraftInfo.__annotations__) | set(BaseInfo.__annotations__)
