"""Speculative-decoding acceptance from a server's Prometheus ``/metrics`` text: vLLM, SGLang and llama.cpp.

Each server kind's metric names live in one table, :data:`METRIC_NAMES`. A snapshot is read with
:func:`read_counters` (cumulative counters since the server started, summed over the served model's label sets) and
two snapshots around a run give that run's acceptance with :func:`acceptance_between`, on vLLM's definitions:

- acceptance rate = accepted draft tokens / draft tokens;
- mean acceptance length = 1 + accepted draft tokens / drafts (tokens per verify step, the bonus token included);
- per position i = draft tokens accepted at position i / drafts.

Names are matched on *sample* names as the text carries them. prometheus_client's parser strips ``_total`` from a
counter's family name (and adds it to a counter sample that lacks it), so a counter's sample is always ``..._total``
while its family is not; the ``_created`` samples prometheus_client emits beside each counter are never matched.
Imports nothing heavy: prometheus_client's text parser only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

SERVER_KINDS = ("vllm", "sglang", "llamacpp")

MODEL_LABEL = "model_name"  # the served model's label on vLLM's and SGLang's samples; llama.cpp has none
POSITION_LABEL = "position"  # the draft position's label on the per-position counters (vLLM, llama.cpp)


@dataclass(frozen=True)
class SpecMetricNames:
    """The sample names one server kind exports for speculative decoding; None where the kind has no such metric."""

    drafts: str | None  # counter: verify steps that had a draft, per request
    draft_tokens: str | None  # counter: draft tokens proposed
    accepted_tokens: str | None  # counter: draft tokens accepted
    accepted_per_position: str | None  # counter with a `position` label: accepted at draft position 0..k-1
    accept_rate_gauge: str | None = None  # gauge: the server's own running acceptance rate
    accept_length_gauge: str | None = None  # gauge: the server's own running mean acceptance length

    def names(self) -> frozenset[str]:
        """Every sample name mapped for this kind."""
        fields = (self.drafts, self.draft_tokens, self.accepted_tokens, self.accepted_per_position,
                  self.accept_rate_gauge, self.accept_length_gauge)
        return frozenset(name for name in fields if name is not None)


METRIC_NAMES: Mapping[str, SpecMetricNames] = MappingProxyType({
    # vllm-project/vllm vllm/v1/spec_decode/metrics.py (SpecDecodingProm: counters registered without `_total`,
    # which prometheus_client appends to the samples); labels model_name and engine from vllm/v1/metrics/loggers.py
    # (PrometheusStatLogger), plus position on the per-position counter. Present only with a speculative_config.
    "vllm": SpecMetricNames(
        drafts="vllm:spec_decode_num_drafts_total",
        draft_tokens="vllm:spec_decode_num_draft_tokens_total",
        accepted_tokens="vllm:spec_decode_num_accepted_tokens_total",
        accepted_per_position="vllm:spec_decode_num_accepted_tokens_per_pos_total",
    ),
    # sgl-project/sglang python/sglang/srt/observability/metrics_collector.py (formerly
    # python/sglang/srt/metrics/collector.py): SchedulerMetricsCollector's gauges spec_accept_rate and
    # spec_accept_length (labels model_name, engine_type, tp_rank, pp_rank, moe_ep_rank[, dp_rank]) and, in newer
    # releases, TokenizerMetricsCollector's counter spec_verify_calls_total (labels model_name, engine_type), which
    # counts a request's verify steps when the request finishes. SGLang exports no draft-token, accepted-token or
    # per-position counters. Served with --enable-metrics.
    "sglang": SpecMetricNames(
        drafts="sglang:spec_verify_calls_total",
        draft_tokens=None,
        accepted_tokens=None,
        accepted_per_position=None,
        accept_rate_gauge="sglang:spec_accept_rate",
        accept_length_gauge="sglang:spec_accept_length",
    ),
    # ggml-org/llama.cpp tools/server/server-task.cpp (server_task_result_metrics::to_metrics, added by PR #26389):
    # counters written with `_total` in their names, no labels; the per-position counter appears after the first
    # completed speculative request. Served with --metrics.
    "llamacpp": SpecMetricNames(
        drafts="llamacpp:spec_decode_num_drafts_total",
        draft_tokens="llamacpp:spec_decode_num_draft_tokens_total",
        accepted_tokens="llamacpp:spec_decode_num_accepted_tokens_total",
        accepted_per_position="llamacpp:spec_decode_num_accepted_tokens_per_pos_total",
    ),
})


@dataclass(frozen=True)
class SpecCounters:
    """Cumulative speculative-decoding counters of a server at one instant (summed over the served model's label
    sets)."""

    drafts: float | None  # verify steps that had a draft (vLLM: num_drafts)
    draft_tokens: float | None  # draft tokens proposed
    accepted_tokens: float | None  # draft tokens accepted
    accepted_per_position: tuple[float, ...]  # accepted at draft position 0..k-1 (empty when the server lacks it)
    # gauges some servers export instead of counters (SGLang): the server's own running figures, not differences
    accept_rate_gauge: float | None = None
    accept_length_gauge: float | None = None


@dataclass(frozen=True)
class Acceptance:
    """Acceptance over an interval, from two counter snapshots; vLLM's definitions."""

    drafts: float | None
    draft_tokens: float | None
    accepted_tokens: float | None
    acceptance_rate: float | None  # accepted / draft tokens
    mean_acceptance_length: float | None  # 1 + accepted / drafts (tokens per verify step)
    per_position: tuple[float | None, ...]  # accepted at position i / drafts


def metric_names(kind: str) -> SpecMetricNames:
    """The mapped sample names of server ``kind``; ValueError naming :data:`SERVER_KINDS` for an unknown kind."""
    if kind not in METRIC_NAMES:
        raise ValueError(f"unknown server kind {kind!r}: expected one of {', '.join(SERVER_KINDS)}")
    return METRIC_NAMES[kind]


def has_spec_metrics(text: str, kind: str) -> bool:
    """Whether ``text`` carries any speculative metric mapped for ``kind`` (present, whatever its value).

    vLLM registers its metrics only when it speculates; llama.cpp writes its counters (as 0) even when it does not.
    ValueError for an unknown kind or for text prometheus_client cannot parse.
    """
    return bool(_spec_samples(text, metric_names(kind).names(), None))


def read_counters(text: str, kind: str, model_name: str | None = None) -> SpecCounters:
    """The speculative-decoding counters in one ``/metrics`` text of a server of ``kind``.

    ``model_name``: keep only samples whose ``model_name`` label equals it; samples without the label (llama.cpp)
    are kept. Counters are summed over the remaining label sets (vLLM's engine="0", engine="1"); gauges, which are
    per-rank running figures, are averaged over them. A metric the text lacks is None, never 0. ValueError for an
    unknown kind, for text prometheus_client cannot parse, or for per-position samples without positions 0..k-1.
    """
    names = metric_names(kind)
    samples = _spec_samples(text, names.names(), model_name)
    return SpecCounters(
        drafts=_total(samples, names.drafts),
        draft_tokens=_total(samples, names.draft_tokens),
        accepted_tokens=_total(samples, names.accepted_tokens),
        accepted_per_position=_per_position(samples, names.accepted_per_position),
        accept_rate_gauge=_mean(samples, names.accept_rate_gauge),
        accept_length_gauge=_mean(samples, names.accept_length_gauge),
    )


def acceptance_between(before: SpecCounters, after: SpecCounters) -> Acceptance:
    """Acceptance over the interval between two snapshots of one server: the differences ``after - before``.

    A figure whose counts are missing (either snapshot None) is None; when the interval had zero drafts every
    rate is None (not 0, and no ZeroDivisionError). Per position, a position ``before`` lacks counts as 0 (llama.cpp
    adds its per-position counter with the first speculative request). A counter that went down means the server
    restarted between the snapshots: ValueError.

    Gauge-only kinds (SGLang, which has no draft-token or accepted-token counters): the acceptance rate and the
    mean acceptance length are ``after``'s gauges, the server's own running figures over its latest logging window
    rather than over this interval, and the token counts are None; ``drafts`` is still the difference of the
    verify-step counter where the server has one.
    """
    drafts = _difference("drafts", before.drafts, after.drafts)
    draft_tokens = _difference("draft tokens", before.draft_tokens, after.draft_tokens)
    accepted = _difference("accepted tokens", before.accepted_tokens, after.accepted_tokens)
    accepted_at = _position_differences(before.accepted_per_position, after.accepted_per_position)
    if drafts == 0:
        return Acceptance(drafts, draft_tokens, accepted, None, None, tuple(None for _ in accepted_at))
    if accepted is None or draft_tokens is None:
        rate = after.accept_rate_gauge
    else:
        rate = _ratio(accepted, draft_tokens)
    if accepted is None or drafts is None:
        length = after.accept_length_gauge
    else:
        length = 1.0 + accepted / drafts
    per_position = tuple(_ratio(count, drafts) for count in accepted_at)
    return Acceptance(drafts, draft_tokens, accepted, rate, length, per_position)


# A parsed sample, reduced to what this module uses: its labels and its value.
_Sample = tuple[Mapping[str, str], float]


def _spec_samples(text: str, names: frozenset[str], model_name: str | None) -> dict[str, list[_Sample]]:
    """The samples of ``text`` whose name is in ``names``, by name, less those of another model than ``model_name``."""
    found: dict[str, list[_Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in names or not _of_model(sample.labels, model_name):
                continue
            found.setdefault(sample.name, []).append((sample.labels, float(sample.value)))
    return found


def _of_model(labels: Mapping[str, str], model_name: str | None) -> bool:
    """Whether a sample with ``labels`` belongs to ``model_name`` (any model when None; always when unlabelled)."""
    return model_name is None or labels.get(MODEL_LABEL, model_name) == model_name


def _values(samples: Mapping[str, list[_Sample]], name: str | None) -> list[float]:
    """The finite values of the samples named ``name`` (none when ``name`` is None)."""
    if name is None:
        return []
    return [value for _, value in samples.get(name, []) if math.isfinite(value)]


def _total(samples: Mapping[str, list[_Sample]], name: str | None) -> float | None:
    """The sum of the samples named ``name`` over their label sets; None when there are none."""
    values = _values(samples, name)
    return math.fsum(values) if values else None


def _mean(samples: Mapping[str, list[_Sample]], name: str | None) -> float | None:
    """The mean of the samples named ``name`` over their label sets; None when there are none."""
    values = _values(samples, name)
    return math.fsum(values) / len(values) if values else None


def _per_position(samples: Mapping[str, list[_Sample]], name: str | None) -> tuple[float, ...]:
    """The per-position counter summed over label sets by position: index i is position i; empty when absent."""
    rows = samples.get(name, []) if name is not None else []
    by_position: dict[int, float] = {}
    for labels, value in rows:
        position = _position(labels, name)
        by_position[position] = by_position.get(position, 0.0) + value
    if sorted(by_position) != list(range(len(by_position))):
        raise ValueError(f"{name} has positions {sorted(by_position)}, expected 0..k-1 without gaps")
    return tuple(by_position[i] for i in range(len(by_position)))


def _position(labels: Mapping[str, str], name: str | None) -> int:
    """The draft position in a per-position sample's labels; ValueError when it has none or it is not an integer."""
    text = labels.get(POSITION_LABEL)
    if text is None or not text.isdigit():
        raise ValueError(f"{name} sample with labels {dict(labels)} has no integer {POSITION_LABEL!r} label")
    return int(text)


def _difference(what: str, before: float | None, after: float | None) -> float | None:
    """``after - before`` of one counter; None when either is missing; ValueError when the counter went down."""
    if before is None or after is None:
        return None
    return _increase(what, before, after)


def _increase(what: str, before: float, after: float) -> float:
    """``after - before`` of one counter known in both snapshots; ValueError when it went down (a restart)."""
    if after < before:
        raise ValueError(f"the {what} counter went down from {before:g} to {after:g}: the server restarted between "
                         "the two /metrics snapshots, so the interval's acceptance is unknown")
    return after - before


def _position_differences(before: tuple[float, ...], after: tuple[float, ...]) -> tuple[float, ...]:
    """Per-position ``after - before``, a position ``before`` lacks counting 0; ValueError when ``after`` lacks one."""
    if len(before) > len(after):
        raise ValueError(f"the per-position counters went from {len(before)} positions to {len(after)}: the server "
                         "restarted between the two /metrics snapshots, so the interval's acceptance is unknown")
    padded: Iterable[float] = (*before, *(0.0 for _ in range(len(after) - len(before))))
    return tuple(_increase(f"accepted tokens at position {i}", b, a) for i, (b, a) in enumerate(zip(padded, after)))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
