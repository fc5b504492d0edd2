"""The extra_info contract: README's table, the TypedDict in specperf.analysis.contract and a real benchmark JSON file
agree key for key, and the values have the declared types and ranges."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from specperf.analysis.contract import RATE_KEYS, BaseInfo, DraftInfo
from tests.helpers import load_cases

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_keys() -> set[str]:
    """The backticked names in the first column of README's "extra_info fields" table."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### `extra_info` fields"):]
    section = section[:section.index("\n#", 1)]
    keys: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            keys |= set(re.findall(r"`([a-z_0-9]+)`", cells[1]))
    return keys


def test_readme_documents_exactly_the_contract():
    declared = set(DraftInfo.__required_keys__)
    documented = readme_keys()
    assert documented == declared, (f"in README only: {sorted(documented - declared)}; "
                                    f"in the TypedDict only: {sorted(declared - documented)}")


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


def test_values_have_their_types_and_ranges(bench_json):
    for case_id, info in load_cases(bench_json).items():
        hints = typing.get_type_hints(BaseInfo if info["draft"] is None else DraftInfo)
        for key, hint in hints.items():
            assert _matches(info[key], hint), f"{case_id}: {key} = {info[key]!r} is not {hint}"
        for key in RATE_KEYS:
            values = info.get(key)
            for v in values if isinstance(values, list) else [values]:
                assert v is None or 0.0 <= v <= 1.0, f"{case_id}: {key} = {v} outside 0..1"


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
