"""The output contract: every key specperf writes into a case's pytest-benchmark ``extra_info``, with its type.

Each TypedDict of a stage is what one extraction function returns (mypy checks them); :class:`BaseInfo` and
:class:`DraftInfo` compose them into what a baseline and a draft case write. The docs' contract page is generated from
these and :mod:`specperf.output.contract_doc`; tests check that the page, these TypedDicts and a real
``--benchmark-json`` file agree key for key, and that the values have these types and ranges. A key added in one
place and not the others fails a test.
"""

from __future__ import annotations

from typing import TypedDict

from specperf.analysis.serving import LevelMetrics, ServingSpeedup

Number = float | int
Rates = list[float | None]


class RunMetrics(TypedDict):
    """The run a case belongs to, its size and the verifier's work (:func:`~specperf.analysis.extract.base_metrics`)."""

    verifier: str
    slice: str
    device: str
    dtype: str
    k: int  # 0 for a baseline
    batch_size: int
    n_requests: int
    new_tokens: int
    n_shortened: int
    verifier_calls_per_token: float
    flops_per_token: float | None  # a draft case's counts the draft's FLOPs too (ComparisonMetrics)
    injected_faults: str | None


class TimingMetrics(TypedDict):
    """Latency, throughput, TTFT and TPOT of the timed rounds (:func:`~specperf.analysis.extract.timing_metrics`)."""

    latency_p50: float  # s/token
    latency_p95: float
    throughput_p50: float  # tok/s
    throughput_p95: float
    throughput_p5: float
    ttft_p50: float  # s
    tpot_p50: float | None
    throughput_aggregate: float
    round_s: list[float]


class BreakdownMetrics(TypedDict):
    """Where the wall time goes (:func:`~specperf.analysis.extract.breakdown_metrics`)."""

    time_verifier_per_token: float | None  # s/token, from the untimed instrumented pass (None for vLLM)
    time_draft_per_token: float | None
    time_other_per_token: float | None
    time_verifier_share: float | None  # of the instrumented pass's wall
    time_draft_share: float | None
    time_other_share: float | None


class BaseMetrics(RunMetrics, TimingMetrics, BreakdownMetrics):
    """What :func:`~specperf.analysis.extract.base_metrics` extracts for every case."""


class CaseId(TypedDict):
    """Which case it is: written by the plugin first, before the case runs."""

    case_id: str


class CaseKeys(TypedDict):
    """Which draft and engine a case runs."""

    draft: str | None  # None for a baseline
    engine: str


class BaselineMetrics(CaseKeys, BaseMetrics):
    """What :func:`~specperf.analysis.extract.baseline_metrics` extracts: a baseline's keys but its id."""


class BaseInfo(CaseId, BaselineMetrics):
    """What every case reports, the verifier-only baseline included."""


class DraftKeys(TypedDict):
    """Which draft a draft case runs."""

    draft_model: str | None  # None for prompt lookup
    drafter: str


class AcceptanceMetrics(TypedDict):
    """Draft acceptance, agreement and tokens per verifier call
    (:func:`~specperf.analysis.extract.acceptance_metrics`)."""

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


class ComparisonMetrics(TypedDict):
    """Speedup over the paired baseline, and FLOPs (:func:`~specperf.analysis.extract.comparison_metrics`)."""

    speedup: float
    speedup_aggregate: float
    speedup_rounds: list[float]
    baseline_latency_p50: float
    flops_per_token: float | None  # verifier and draft: replaces RunMetrics' verifier-only figure
    flop_speedup: float | None


class DivergenceMetrics(TypedDict):
    """Exactness against the paired baseline (:func:`~specperf.analysis.extract.divergence_metrics`)."""

    exact_match_rate: float
    first_divergence: list[int | None]
    divergence_margins: list[float | None]  # logits
    divergence_margin_steps: list[float | None]  # |margin| in steps of the dtype
    near_tie_tolerance: float  # steps of the dtype (0 in float32)
    exact_or_near_tie_rate: float
    exact_match_gated: float | None


class TheoryMetrics(TypedDict):
    """Step-cost ratios and Leviathan's expected speedup (:func:`~specperf.analysis.extract.theory_metrics`)."""

    cost_ratio: float | None
    verify_cost: float | None
    expected_speedup: float | None
    efficiency: float | None


class PredictionMetrics(TypedDict):
    """The speedup bound and the best-k prediction (:func:`~specperf.analysis.predict.prediction_metrics`)."""

    speedup_bound: float | None
    bound_efficiency: float | None
    predicted_tokens_per_call_by_k: dict[str, float] | None
    predicted_speedup_by_k: dict[str, float] | None
    best_k: int | None


class DraftMetrics(BaselineMetrics, DraftKeys, AcceptanceMetrics, ComparisonMetrics, DivergenceMetrics,
                   TheoryMetrics, PredictionMetrics):
    """What :func:`~specperf.analysis.extract.case_metrics` extracts: a draft case's keys but its id."""


class DraftInfo(CaseId, DraftMetrics):
    """What a draft case reports: every key of :class:`BaseInfo`, and those of a draft."""


class ServingLoad(TypedDict):
    """Which load level a server case ran (serving mode)."""

    load: str  # 'c4' (concurrency 4), 'r2' (2 requests/s) or 'rinf'
    concurrency: int | None  # closed-loop level; None for a request rate
    request_rate: float | None  # open-loop level (requests/s); None for a concurrency or inf


class TwinLevelMetrics(TypedDict):
    """The twin server's :class:`~specperf.analysis.serving.LevelMetrics` at the same load, each key prefixed."""

    twin_requests: int
    twin_completed: int
    twin_failed: int
    twin_duration_s: float
    twin_output_tokens: int
    twin_ttft_ms_p50: float | None
    twin_ttft_ms_p95: float | None
    twin_ttft_ms_p99: float | None
    twin_ttft_ms_mean: float | None
    twin_tpot_ms_p50: float | None
    twin_tpot_ms_p95: float | None
    twin_tpot_ms_p99: float | None
    twin_tpot_ms_mean: float | None
    twin_itl_ms_p50: float | None
    twin_itl_ms_p95: float | None
    twin_itl_ms_p99: float | None
    twin_itl_ms_mean: float | None
    twin_e2el_ms_p50: float | None
    twin_e2el_ms_p95: float | None
    twin_e2el_ms_p99: float | None
    twin_e2el_ms_mean: float | None
    twin_chunk_itl_ms_p50: float | None
    twin_chunk_itl_ms_p95: float | None
    twin_chunk_itl_ms_p99: float | None
    twin_chunks_per_request_mean: float | None
    twin_tokens_per_chunk_mean: float | None
    twin_output_tok_s: float
    twin_request_s: float
    twin_goodput_req_s: float | None
    twin_slo_attainment: float | None


class ServerAcceptance(TypedDict):
    """Acceptance from the speculative server's /metrics counters over its timed requests; None where it has none."""

    server_acceptance_rate: float | None
    server_mean_acceptance_length: float | None
    server_position_acceptance: Rates | None
    server_draft_tokens: float | None
    server_accepted_tokens: float | None
    server_metrics_note: str | None  # why the counters are null


class ServerMetrics(DraftMetrics, ServingLoad, LevelMetrics, TwinLevelMetrics, ServingSpeedup, ServerAcceptance):
    """What a server case (``engine: server``) extracts: a draft case's keys, and its load level's."""


class ServerInfo(CaseId, ServerMetrics):
    """What a server case reports: every key of :class:`DraftInfo`, and the serving keys."""


# Keys whose values are rates: each value (or each list item) lies in 0..1 when not None.
RATE_KEYS = ("acceptance_mean", "acceptance_p50", "acceptance_p95", "acceptance_aggregate",
             "audit_acceptance_aggregate", "replay_acceptance_aggregate", "acceptance_per_request",
             "agreement_mean", "agreement_p50", "agreement_p95", "alpha",
             "position_acceptance", "exact_match_rate", "exact_or_near_tie_rate", "exact_match_gated",
             "time_verifier_share", "time_draft_share", "time_other_share", "slo_attainment", "twin_slo_attainment",
             "server_acceptance_rate", "server_position_acceptance")
