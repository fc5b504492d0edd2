"""The extra_info contract: the docs' generated table (each key's unit and meaning in specperf.output.contract_doc),
the TypedDict in specperf.analysis.contract and a real benchmark JSON file agree key for key, and the values have the
declared types and ranges."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest

from specperf.analysis.contract import RATE_KEYS, BaseInfo, DraftInfo, ServerInfo
from specperf.output import contract_doc
from specperf.output.contract_doc import FIELDS, SERVER_FIELDS, contract_table, server_table
from tests.helpers import load_cases

CONTRACT_PAGE = Path(__file__).resolve().parents[1] / "docs" / "contract.md"


def test_every_contract_key_has_a_description_and_no_other():
    declared = set(DraftInfo.__required_keys__)
    assert set(FIELDS) == declared, (f"described only: {sorted(set(FIELDS) - declared)}; "
                                     f"in the TypedDict only: {sorted(declared - set(FIELDS))}")
    assert all(meaning for _, meaning in FIELDS.values())


def test_the_docs_page_shows_the_generated_table_of_every_key():
    assert "<!-- specperf:contract -->" in CONTRACT_PAGE.read_text(encoding="utf-8")
    rows = [line for line in contract_table().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(DraftInfo.__annotations__)
    baseline_rows = [row for row in rows if "| yes |" in row]
    assert {row.split("`")[1] for row in baseline_rows} == set(BaseInfo.__annotations__)
    assert "| `k` | `int` | tokens | yes |" in contract_table()


def test_every_server_key_has_a_description_and_a_row():
    server_only = [key for key in ServerInfo.__annotations__ if key not in DraftInfo.__annotations__]
    assert set(SERVER_FIELDS) == set(server_only)
    rows = [line.split("`")[1] for line in server_table().splitlines() if line.startswith("| `")]
    assert rows == server_only
    assert "<!-- specperf:contract-server -->" in CONTRACT_PAGE.read_text(encoding="utf-8")
    assert "| `twin_tpot_ms_p50` | `float or None` | ms |" in server_table()


def test_a_key_without_a_description_fails_the_docs_build(monkeypatch):
    monkeypatch.setattr(contract_doc, "FIELDS", {k: v for k, v in FIELDS.items() if k != "speedup"})
    with pytest.raises(ValueError, match=r"without a description: \['speedup'\]"):
        contract_table()


@pytest.mark.slow
def test_a_real_run_writes_exactly_the_contract(bench_json):
    for case_id, info in load_cases(bench_json).items():
        expected = BaseInfo if info["draft"] is None else DraftInfo
        assert set(info) == set(expected.__required_keys__), (
            f"{case_id}: extra keys {sorted(set(info) - set(expected.__required_keys__))}, "
            f"missing {sorted(set(expected.__required_keys__) - set(info))}")


def _matches(value: Any, hint: Any) -> bool:
    """isinstance for the hints the contract uses: unions, None, list[...], and int where float is declared."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        return isinstance(value, dict) and all(_matches(k, key_hint) and _matches(v, value_hint)
                                               for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


@pytest.mark.slow
def test_values_have_their_types_and_ranges(bench_json):
    for case_id, info in load_cases(bench_json).items():
        hints = typing.get_type_hints(BaseInfo if info["draft"] is None else DraftInfo)
        for key, hint in hints.items():
            assert _matches(info[key], hint), f"{case_id}: {key} = {info[key]!r} is not {hint}"
        for key in RATE_KEYS:
            values = info.get(key)
            for v in values if isinstance(values, list) else [values]:
                assert v is None or 0.0 <= v <= 1.0, f"{case_id}: {key} = {v} outside 0..1"


@pytest.mark.slow
def test_accept_counts_add_up(bench_json):
    """sum(i * counts[i]) is every accepted draft token: new tokens minus one per verifier call. The steps that
    verified drafts are at most the verifier calls past each request's prefill; a draft model always proposes, so
    for it they are fewer only by the plain last step a request may end with (prompt lookup may find nothing)."""
    for case_id, info in load_cases(bench_json).items():
        if info["draft"] is None:
            continue
        counts, n = info["accept_counts"], info["n_requests"]
        calls = round(info["verifier_calls_per_token"] * info["new_tokens"])
        assert sum(i * c for i, c in enumerate(counts)) == info["new_tokens"] - calls, case_id
        assert sum(counts) <= calls - n, case_id
        if info["drafter"] == "model":
            assert sum(counts) >= calls - 2 * n, case_id
        assert len(counts) == info["k"] + 1, case_id
