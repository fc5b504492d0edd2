"""Tests for specperf.config: shipped suites, every error class, narrowing, hashing, fuzzing."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specperf.config import (
    DEFAULT_CONFIG_PATH,
    EMBEDDED_MODELS,
    SUITES_DIR,
    DatasetSpec,
    DraftSpec,
    Floors,
    GenerationSpec,
    SuiteConfig,
    Thresholds,
    TimingGate,
    TimingSpec,
    Tolerances,
    apply_thresholds_file,
    config_hash,
    load_config,
    load_thresholds,
    merge_thresholds,
    narrow,
    parse_config,
    parse_thresholds,
)
from specperf.data import DEFAULT_TEMPLATE
from specperf.errors import ConfigError, SpecperfError


def minimal() -> dict[str, Any]:
    """A small valid suite as yaml.safe_load would return it."""
    return {
        "verifier": "embedded:verifier",
        "drafts": [
            {"name": "draft-small", "model": "embedded:draft-small"},
            {"name": "lookup", "drafter": "prompt-lookup", "max_ngram": 4, "min_ngram": 2},
        ],
        "k": [2, 4],
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """minimal() with the value at a dotted path ('drafts.0.model') set; value DELETE removes it."""
    data = minimal()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()


def config_error(data: object, *fragments: str) -> str:
    """Parse ``data`` as suite.yaml, expect a ConfigError containing every fragment; return it."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="suite.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- shipped suites


def test_embedded_suite_loads() -> None:
    assert DEFAULT_CONFIG_PATH == SUITES_DIR / "embedded.yaml" and DEFAULT_CONFIG_PATH.is_file()
    config = load_config()
    assert config == load_config(DEFAULT_CONFIG_PATH)
    assert config.verifier == "embedded:verifier"
    assert config.draft_names == ("draft-small", "draft-medium", "draft-large", "prompt-lookup", "draft-small-hf")
    assert config.drafts[3] == DraftSpec(name="prompt-lookup", drafter="prompt-lookup", max_ngram=3)
    assert config.drafts[4] == DraftSpec(name="draft-small-hf", model="embedded:draft-small", engine="hf")
    assert config.k == (2, 4, 6) and config.dataset.source == "embedded" and config.dataset.slices == ("0:2",)
    assert config.dataset.acceptance_slice == "0:32"
    assert config.generation == GenerationSpec(max_new_tokens=64, temperature=0.0)
    assert config.timing == TimingSpec(rounds=10, warmup_rounds=1) and config.threads == 1
    assert config.thresholds.default == Floors(min_exact_match=1.0)


def test_gpt2_pubmedqa_suite_loads() -> None:
    config = load_config(SUITES_DIR / "gpt2-pubmedqa.yaml")
    assert config.verifier == "openai-community/gpt2-xl" and config.dtype == "float16"
    assert [d.model for d in config.drafts] == [
        "distilbert/distilgpt2", "openai-community/gpt2", "openai-community/gpt2-medium",
        "openai-community/gpt2-large"]
    assert config.dataset == DatasetSpec(source="hf", path="qiaojin/PubMedQA", hf_config="pqa_labeled",
                                         split="train", slices=("0:32",))
    assert config.generation.max_new_tokens == 128 and config.k == (4,)
    assert config.thresholds.default == Floors(min_exact_match=1.0, min_speedup=1.0)


def test_minimal_suite_gets_documented_defaults() -> None:
    config = parse_config({"verifier": "embedded:verifier", "drafts": [{"name": "d", "model": "m"}]})
    assert config == SuiteConfig(verifier="embedded:verifier", drafts=(DraftSpec(name="d", model="m"),))
    assert (config.device, config.dtype, config.threads, config.k, config.batch_size) == (
        "auto", "float32", None, (4,), (1,))
    assert config.dataset.template == DEFAULT_TEMPLATE
    assert config.thresholds == Thresholds()
    assert config.thresholds.tolerances == Tolerances(0.002, 0.002, 0.01, 0.01, 0.01, 0.0)
    assert config.thresholds.timing == TimingGate(alpha=0.05, min_effect=0.05)


def test_scalars_are_normalized() -> None:
    config = parse_config({**minimal(), "k": 3, "batch_size": 2, "threads": 2, "device": "cuda:1",
                           "generation": {"temperature": 1}, "dataset": {"slices": "head:4"}})
    assert config.k == (3,) and config.batch_size == (2,) and config.threads == 2
    assert config.generation.temperature == 1.0 and isinstance(config.generation.temperature, float)
    assert config.dataset.slices == ("head:4",)


def test_embedded_names_match_the_shipped_weights() -> None:
    from specperf.embedded import WEIGHTS_DIR

    assert {p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file()} == set(EMBEDDED_MODELS)


# --------------------------------------------------------------------------- files and YAML


def test_yaml_syntax_error_names_file_line_and_problem(tmp_path: Path) -> None:
    file = tmp_path / "suite.yaml"
    file.write_text("verifier: embedded:verifier\ndrafts:\n  - name: a\n   model: b\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    message = str(info.value)
    assert f"{file}:4:" in message and "line 4" in message and "expected <block end>" in message


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("- a\n- b\n", "top level: got"),
    ("verifier: 2024-13-01\n", "month must be in 1..12"),
    ("verifier: \x07\n", "special characters are not allowed"),
])
def test_unusable_files(tmp_path: Path, text: str, fragment: str) -> None:
    file = tmp_path / "suite.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=fragment):
        load_config(file)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    file = tmp_path / "latin1.yaml"
    file.write_bytes("verifier: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(file)


# --------------------------------------------------------------------------- unknown and missing keys


def test_unknown_top_level_key_suggests_the_closest() -> None:
    data = minimal()
    data["dafts"] = data.pop("drafts")
    message = config_error(data, "unknown key 'dafts' at top level of suite.yaml", "did you mean 'drafts'?",
                           "valid keys: verifier, device")
    assert "fix:" in message


@pytest.mark.parametrize("path, key, fragments", [
    ("dataset", "slcies", ("in 'dataset'", "did you mean 'slices'?")),
    ("drafts.0", "modle", ("in 'drafts[0]'", "did you mean 'model'?")),
    ("thresholds.default", "min_sped", ("in 'thresholds.default'", "did you mean 'min_speedup'?")),
    ("thresholds.timing", "alfa", ("in 'thresholds.timing'", "did you mean 'alpha'?")),
])
def test_unknown_nested_key_suggests_the_closest(path: str, key: str, fragments: tuple[str, ...]) -> None:
    config_error(with_change(f"{path}.{key}", 1), f"unknown key {key!r}", *fragments)


def test_missing_required_keys() -> None:
    config_error(with_change("verifier", DELETE), "missing required key 'verifier'", "verifier: embedded:verifier")
    config_error(with_change("drafts", DELETE), "missing required key 'drafts'")
    config_error(with_change("drafts.0.name", DELETE), "missing required key 'name' in 'drafts[0]'")


# --------------------------------------------------------------------------- types and ranges


@pytest.mark.parametrize("path, value, fragments", [
    ("verifier", 3, ("verifier: got 3 (int)", "non-empty string")),
    ("generation.max_new_tokens", "64", ("generation.max_new_tokens: got '64' (str)", "an integer in 1..4096")),
    ("timing.rounds", True, ("timing.rounds: got True (bool)", "an integer")),
    ("k", [2, True], ("k[1]: got True (bool)",)),
    ("threads", 0, ("threads: got 0 (int)", "an integer in 1..4096")),
    ("generation.temperature", True, ("generation.temperature: got True (bool)", "a number >= 0")),
    ("generation.temperature", -0.5, ("generation.temperature", "a number >= 0")),
    ("generation.stop_at_eos", "yes please", ("generation.stop_at_eos", "a boolean")),
    ("trust_remote_code", 1, ("trust_remote_code: got 1 (int)", "a boolean")),
    ("dataset", [1], ("dataset: got [1] (list)", "a mapping")),
    ("device", "gpu", ("device: got 'gpu' (str)", "auto, cpu, cuda, cuda:N")),
    ("dtype", "float61", ("dtype", "did you mean 'float16'?")),
    ("timing.warmup_rounds", 101, ("timing.warmup_rounds: got 101", "0..100")),
    ("timing.cost_rounds", 0, ("timing.cost_rounds: got 0", "an integer in 1..")),
    ("forward", "fast", ("forward: got 'fast' (str)", "lean", "packed", "transformers")),
])
def test_wrong_types_and_values(path: str, value: Any, fragments: tuple[str, ...]) -> None:
    message = config_error(with_change(path, value), "suite.yaml: ", *fragments)
    assert "expected" in message and "fix:" in message


@pytest.mark.parametrize("k, fragments", [
    (0, ("k: got 0 (int)", "an integer in 1..64")),
    ([4, 65], ("k[1]: got 65 (int)", "1..64")),
    ([2, 4, 2], ("k[2]: got 2 (int)", "distinct", "remove the duplicate 2")),
    ([], ("k: got [] (list)", "non-empty list")),
    (2.0, ("k: got 2.0 (float)",)),
])
def test_bad_block_sizes(k: Any, fragments: tuple[str, ...]) -> None:
    config_error(with_change("k", k), *fragments)


# --------------------------------------------------------------------------- drafts


def test_empty_and_duplicate_drafts() -> None:
    config_error(with_change("drafts", []), "drafts: got [] (list)", "non-empty list")
    config_error(with_change("drafts", [None]), "drafts[0]: got None")
    data = with_change("drafts.1.name", "draft-small")
    config_error(data, "drafts[1].name: got 'draft-small'", "rename one of the drafts")


@pytest.mark.parametrize("draft, fragments", [
    ({"name": "d"}, ("missing required key 'model' in 'drafts[1]'", "drafter: prompt-lookup")),
    ({"name": "d", "drafter": "prompt-lookup", "model": "m"}, ("drafts[1].model: got 'm'", "remove model")),
    ({"name": "d", "drafter": "prompt-lookup", "engine": "hf"}, ("drafts[1].engine: got 'hf'",)),
    ({"name": "d", "model": "m", "max_ngram": 2}, ("drafts[1].max_ngram", "set drafter: prompt-lookup")),
    ({"name": "d", "drafter": "prompt-lookup", "min_ngram": 4}, ("drafts[1].min_ngram: got 4", "max_ngram (3)")),
    ({"name": "d", "drafter": "prompt-lookup", "max_ngram": 17}, ("drafts[1].max_ngram: got 17", "1..16")),
    ({"name": "bad name", "model": "m"}, ("drafts[1].name: got 'bad name'", "test ids")),
    ({"name": "d", "model": "embedded:draft-smal"}, ("drafts[1].model", "did you mean 'embedded:draft-small'?")),
    ({"name": "d", "model": "m", "drafter": "lookup"}, ("drafts[1].drafter", "model, prompt-lookup")),
])
def test_bad_draft(draft: dict[str, Any], fragments: tuple[str, ...]) -> None:
    config_error(with_change("drafts.1", draft), *fragments)


# --------------------------------------------------------------------------- dataset


@pytest.mark.parametrize("dataset, fragments", [
    ({"slices": ["0:8", "0-8"]}, ("dataset.slices[1]", "malformed slice '0-8'", "accepted forms")),
    ({"slices": "8:0"}, ("dataset.slices", "selects no rows")),
    ({"slices": ["0:8", "0:8"]}, ("dataset.slices[1]", "remove the duplicate '0:8'")),
    ({"slices": [8]}, ("dataset.slices[0]: got 8 (int)",)),
    ({"template": "Q: {question}"}, ("dataset.template", "missing {abstract}")),
    ({"template": "{question} {abstract} {answer}"}, ("dataset.template", "unknown field(s) '{answer}'")),
    ({"source": "file"}, ("missing required key 'path' in 'dataset'",)),
    ({"source": "embedded", "path": "x.json"}, ("dataset.path: got 'x.json'", "remove path")),
    ({"source": "hugging"}, ("dataset.source", "hf, pubmedqa-json, file, embedded")),
    ({"context_policy": "drop"}, ("dataset.context_policy", "truncate-abstract, error")),
])
def test_bad_dataset(dataset: dict[str, Any], fragments: tuple[str, ...]) -> None:
    config_error(with_change("dataset", dataset), *fragments)


# --------------------------------------------------------------------------- thresholds


def test_inline_thresholds_and_floors_for() -> None:
    config = parse_config(with_change("thresholds", {
        "default": {"min_speedup": 1.0, "min_exact_match": 1, "min_acceptance": None},
        "drafts": {"lookup": {"min_speedup": 1.3}, "draft-small": {"min_acceptance": 0.5}},
        "tolerances": {"acceptance": 0.01},
        "timing": {"alpha": 0.01}}))
    thresholds = config.thresholds
    assert [name for name, _ in thresholds.drafts] == ["draft-small", "lookup"]  # sorted
    assert thresholds.floors_for("lookup") == Floors(min_speedup=1.3, min_exact_match=1.0)
    assert thresholds.floors_for("draft-small") == Floors(min_speedup=1.0, min_exact_match=1.0, min_acceptance=0.5)
    assert thresholds.floors_for("other") == thresholds.default
    assert thresholds.tolerances == Tolerances(acceptance=0.01)
    assert thresholds.timing == TimingGate(alpha=0.01, min_effect=0.05)


def test_timing_gate_keys_parse() -> None:
    config = parse_config(with_change("thresholds.timing", {"run_sd": 0.03, "min_runs": 5}))
    assert config.thresholds.timing == TimingGate(alpha=0.05, min_effect=0.05, run_sd=0.03, min_runs=5)


def test_thresholds_naming_an_unknown_draft() -> None:
    config_error(with_change("thresholds.drafts", {"draft-smal": {"min_speedup": 1.3}}),
                 "thresholds.drafts: unknown draft 'draft-smal'", "did you mean 'draft-small'?",
                 "known drafts: draft-small, lookup")
    assert parse_thresholds({"drafts": {"any": {"min_speedup": 1.3}}}).floors_for("any").min_speedup == 1.3


@pytest.mark.parametrize("path, value, fragment", [
    ("thresholds.timing.alpha", 0, "a number in (0, 1)"),
    ("thresholds.timing.alpha", 1.0, "a number in (0, 1)"),
    ("thresholds.timing.alpha", "0.01", "got '0.01' (str)"),
    ("thresholds.timing.min_effect", 1.5, "a number in [0, 1]"),
    ("thresholds.timing.run_sd", -0.01, "a number in [0, 1]"),
    ("thresholds.timing.min_runs", 1, "an integer in 2..1000"),
    ("thresholds.timing.min_runs", 2.5, "an integer in 2..1000"),
    ("thresholds.default.min_acceptance", 1.5, "a number in [0, 1]"),
    ("thresholds.default.min_speedup", float("nan"), "finite"),
    ("thresholds.tolerances.acceptance", None, "got None (null)"),
    ("thresholds.drafts.lookup.min_agreement", -0.1, "thresholds.drafts.lookup.min_agreement"),
])
def test_bad_threshold_values(path: str, value: Any, fragment: str) -> None:
    config_error(with_change(path, value), path, fragment)


def test_merge_thresholds_key_by_key() -> None:
    base = parse_thresholds({"default": {"min_speedup": 1.0, "min_exact_match": 1.0},
                             "drafts": {"a": {"min_speedup": 1.3, "min_agreement": 0.5}},
                             "timing": {"min_effect": 0.2}})
    merged = merge_thresholds(base, {"default": {"min_speedup": 1.1, "min_exact_match": None},
                                     "drafts": {"a": {"min_acceptance": 0.4}, "b": {"min_speedup": 2}},
                                     "timing": {"alpha": 0.05}})
    assert merged.default == Floors(min_speedup=1.1, min_exact_match=None)  # an explicit null removes the floor
    assert merged.floors_for("a") == Floors(min_speedup=1.3, min_agreement=0.5, min_acceptance=0.4,
                                            min_exact_match=None)
    assert merged.floors_for("b").min_speedup == 2.0
    assert merged.timing == TimingGate(alpha=0.05, min_effect=0.2)
    assert merge_thresholds(base, None) == base
    with pytest.raises(ConfigError, match="override.yaml: drafts: unknown draft 'c'"):
        merge_thresholds(base, {"drafts": {"c": {}}}, source="override.yaml", draft_names=["a", "b"])


def test_merge_parsed_thresholds_applies_set_values_only() -> None:
    base = parse_thresholds({"default": {"min_speedup": 1.0, "min_agreement": 0.5},
                             "tolerances": {"acceptance": 0.01}, "timing": {"alpha": 0.05}})
    override = parse_thresholds({"default": {"min_speedup": 1.2}, "drafts": {"a": {"min_acceptance": 0.3}},
                                 "tolerances": {"agreement": 0.004}})
    merged = merge_thresholds(base, override, draft_names=["a"])
    assert merged.default == Floors(min_speedup=1.2, min_agreement=0.5)
    assert merged.floors_for("a") == Floors(min_speedup=1.2, min_agreement=0.5, min_acceptance=0.3)
    assert merged.tolerances == Tolerances(acceptance=0.01, agreement=0.004)
    assert merged.timing == TimingGate(alpha=0.05)
    with pytest.raises(ConfigError, match="unknown draft 'a'"):
        merge_thresholds(base, override, draft_names=["b"])


def test_thresholds_file(tmp_path: Path) -> None:
    config = parse_config(with_change("thresholds", {"default": {"min_speedup": 1.0, "min_agreement": 0.5}}))
    file = tmp_path / "thresholds.yaml"
    file.write_text("default:\n  min_speedup: 1.2\ndrafts:\n  lookup: {min_acceptance: 0.1}\n", encoding="utf-8")
    assert load_thresholds(file).default == Floors(min_speedup=1.2)
    applied = apply_thresholds_file(config, file)
    assert applied.thresholds.floors_for("lookup") == Floors(min_speedup=1.2, min_agreement=0.5, min_acceptance=0.1)
    assert applied.drafts == config.drafts
    file.write_text("drafts:\n  nope: {min_speedup: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{file}: drafts: unknown draft 'nope'"):
        apply_thresholds_file(config, file)


# --------------------------------------------------------------------------- narrowed


def test_narrowed() -> None:
    config = load_config()
    narrowed = narrow(config, drafts=["prompt-lookup", "draft-small"], k=[8], slices=["head:4", "random:2"])
    assert narrowed.draft_names == ("draft-small", "prompt-lookup")  # suite order
    assert narrowed.k == (8,) and narrowed.dataset.slices == ("head:4", "random:2:seed=0")
    assert narrowed.thresholds == config.thresholds and narrowed.verifier == config.verifier
    assert narrow(config, None, None, None) == config
    assert narrow(config, drafts="draft-large").draft_names == ("draft-large",)


@pytest.mark.parametrize("kwargs, fragments", [
    ({"drafts": ["draft-smal"]}, ("drafts[0]", "did you mean 'draft-small'?", "prompt-lookup, draft-small-hf")),
    ({"drafts": []}, ("at least one draft name",)),
    ({"k": [0]}, ("k[0]: got 0", "1..64")),
    ({"k": [4, 4]}, ("k[1]", "duplicate")),
    ({"slices": ["0:0"]}, ("dataset.slices[0]", "selects no rows")),
])
def test_narrowed_rejects(kwargs: dict[str, Any], fragments: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        narrow(load_config(), **kwargs)
    assert "command-line selection" in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


# --------------------------------------------------------------------------- config_hash


def test_config_hash_is_canonical_and_stable() -> None:
    config = parse_config(minimal())
    digest = config_hash(config)
    canonical = json.dumps(dataclasses.asdict(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert digest == hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]
    reordered = dict(reversed(list(minimal().items())))
    assert config_hash(parse_config(reordered)) == digest
    assert config_hash(parse_config(copy.deepcopy(minimal()))) == digest
    # The contract: sha256 of the sorted-key JSON of the dataclass tree (no hash(), no ids).
    canonical = json.dumps(dataclasses.asdict(config), sort_keys=True, separators=(",", ":"))
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()[:16]


@pytest.mark.parametrize("path, value", [
    ("k", [2, 8]), ("drafts.0.model", "embedded:draft-large"), ("generation.max_new_tokens", 32),
    ("dataset.slices", ["0:16"]), ("thresholds.default.min_speedup", 1.1), ("dtype", "bfloat16"),
])
def test_config_hash_changes_with_the_config(path: str, value: Any) -> None:
    assert config_hash(parse_config(with_change(path, value))) != config_hash(parse_config(minimal()))


def test_config_hash_changes_when_narrowed() -> None:
    config = load_config()
    assert config_hash(narrow(config, k=[4])) != config_hash(config)


# --------------------------------------------------------------------------- fuzzing


def full() -> dict[str, Any]:
    """A valid suite that sets every key, so that mutations reach every validator."""
    return {
        "verifier": "embedded:verifier", "device": "cpu", "dtype": "float32", "threads": 2, "trust_remote_code": False,
        "drafts": [{"name": "draft-small", "model": "embedded:draft-small", "engine": "hf"},
                   {"name": "lookup", "drafter": "prompt-lookup", "max_ngram": 4, "min_ngram": 2}],
        "k": [2, 4], "batch_size": [1],
        "dataset": {"source": "file", "path": "prompts.jsonl", "hf_config": "pqa_labeled", "split": "train",
                    "template": DEFAULT_TEMPLATE, "slices": ["0:8", "random:4:seed=1"], "context_policy": "error"},
        "generation": {"max_new_tokens": 32, "temperature": 0.5, "seed": 7, "stop_at_eos": True},
        "timing": {"rounds": 3, "warmup_rounds": 0},
        "thresholds": {"default": {"min_speedup": 1.0, "min_exact_match": 1.0},
                       "drafts": {"lookup": {"min_acceptance": 0.2}},
                       "tolerances": {"acceptance": 0.01, "mean_accepted_length": 0.02},
                       "timing": {"alpha": 0.05, "min_effect": 0.2}},
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path (dict keys and list indices) of a nested dict/list tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found = []
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


FULL_PATHS = _paths(full())
_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
_json_like = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
# Numbers at and around every bound the schema has (k 1..64, ngram 1..16, seed 0..2**32-1, fractions 0..1, ...).
_edge_numbers = st.sampled_from([0, 1, -1, 2, 16, 17, 63, 64, 65, 100, 101, 1000, 1001, 4096, 4097, 2**32 - 1, 2**32,
                                 2**63, 16**5000, -(2**64), 0.0, -0.0, 0.5, 1.0, 1.0000001, -1e-9, 1e308,
                                 float("inf"), float("-inf"), float("nan")])
_typed_values = st.sampled_from([None, True, False, "", " ", "x", "0:8", "embedded:x", "embedded:verifier",
                                 "prompt-lookup", "hf", "file", "cuda:0", "float16", "{question}", "{abstract}",
                                 [], {}, [None], [1, 1], {"name": "d"}, {"default": None}, "4", "1.5", "yes"])
_ANY_VALUE = _json_like | _edge_numbers | _typed_values


def _holds(node: Any, key: Any) -> bool:
    """Whether ``node`` (a dict or list) has ``key`` (a dict key or list index)."""
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and key < len(node)


def _mutate(tree: Any, path: tuple[Any, ...], op: str, value: Any) -> None:
    """Apply one mutation at ``path``: drop the key, or replace its value (a type swap or a bad number)."""
    node = tree
    for key in path[:-1]:
        if not _holds(node, key):
            return  # an earlier mutation removed or replaced this branch
        node = node[key]
    last = path[-1]
    if _holds(node, last) and op == "drop":
        del node[last]
    elif _holds(node, last) or (isinstance(node, dict) and op == "replace"):
        node[last] = value


@st.composite
def _mutated_suite(draw: st.DrawFn) -> dict[str, Any]:
    """A valid suite (minimal or full) with one to three keys dropped or their values replaced."""
    tree = draw(st.sampled_from([minimal, full]))()
    paths = FULL_PATHS if "dataset" in tree else _paths(tree)
    for _ in range(draw(st.integers(1, 3))):
        _mutate(tree, draw(st.sampled_from(paths)), draw(st.sampled_from(["drop", "replace", "replace"])),
                draw(_ANY_VALUE))
    return tree


class _Dumper(yaml.SafeDumper):
    """safe_dump, but an int of more digits than str() may print is written in hex, as YAML allows."""


_Dumper.add_representer(int, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:int", hex(value) if abs(value) >= 10**4000 else str(value)))


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper)


def _check_outcome(call: Any) -> None:
    """``call()`` returns a valid SuiteConfig or raises a SpecperfError with a message; nothing else."""
    try:
        result = call()
    except SpecperfError as exc:
        assert str(exc)
    else:
        assert isinstance(result, SuiteConfig)
        assert len(config_hash(result)) == 16


def test_full_suite_is_valid() -> None:
    config = parse_config(full())
    assert config.dataset.context_policy == "error" and config.thresholds.floors_for("lookup").min_acceptance == 0.2


@settings(max_examples=200, deadline=None)
@given(st.one_of(_json_like, _mutated_suite()))
def test_fuzz_parse_config_raises_only_config_error(data: Any) -> None:
    try:
        result = parse_config(data)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(result, SuiteConfig)
        assert len(config_hash(result)) == 16


_YAML_PIECES = ["verifier:", " embedded:verifier", "\n", "drafts:", " - ", "name: d", "{", "[", "]", ":", "k: 2",
                "'", '"', "  ", "#", "&a", "*a", "!!str", "2024-13-01", "0x" + "f" * 40, "!!set {a}", "? [a]",
                "!!binary", "!!float", "!!int", ".nan", "-.inf", "<<: *a", "\t", "%YAML 1.1", "---", "...", "|",
                ">", "!!python/object:os.system", "~", "\ufeff", "\x85"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=200),
    _mutated_suite().map(_dump),
    st.lists(st.sampled_from(_YAML_PIECES), max_size=25).map("".join),
))
def test_fuzz_load_config_raises_only_config_error(tmp_path: Path, text: str) -> None:
    file = tmp_path / "fuzz.yaml"
    file.write_text(text, encoding="utf-8")
    try:
        result = load_config(file)
    except SpecperfError as exc:
        assert isinstance(exc, ConfigError) and str(exc)
    else:
        assert isinstance(result, SuiteConfig)


@st.composite
def _mutated_thresholds(draw: st.DrawFn) -> Any:
    """The thresholds section of full(), mutated like a suite; sometimes arbitrary data instead."""
    tree = {"thresholds": full()["thresholds"]}
    for _ in range(draw(st.integers(0, 3))):
        _mutate(tree, draw(st.sampled_from([p for p in FULL_PATHS if p[0] == "thresholds" and len(p) > 1])),
                draw(st.sampled_from(["drop", "replace"])), draw(_ANY_VALUE))
    return tree["thresholds"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_mutated_thresholds(), _json_like).map(_dump) | st.text(max_size=80))
def test_fuzz_thresholds_file_raises_only_config_error(tmp_path: Path, text: str) -> None:
    file = tmp_path / "thresholds.yaml"
    file.write_text(text, encoding="utf-8")
    _check_outcome(lambda: apply_thresholds_file(_FUZZ_BASE, file))


_FUZZ_BASE = parse_config(full())


@settings(max_examples=200, deadline=None)
@given(drafts=st.none() | _ANY_VALUE | st.lists(st.sampled_from(["draft-small", "lookup", "x"]), max_size=3),
       k=st.none() | _ANY_VALUE, slices=st.none() | _ANY_VALUE | st.lists(st.text(max_size=8), max_size=3))
def test_fuzz_narrowed_raises_only_config_error(drafts: Any, k: Any, slices: Any) -> None:
    _check_outcome(lambda: narrow(_FUZZ_BASE, drafts, k, slices))
