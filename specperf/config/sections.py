"""The suite's sections (drafts, dataset, generation, timing), validated into the schema's dataclasses.

Defaults come from the dataclasses themselves, never repeated here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from specperf.config.checks import (
    At,
    as_list,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_int_tuple,
    check_mapping,
    check_str,
    required_key,
    show_value,
    suggest,
)
from specperf.config.schema import (
    DATASET_DEFAULTS,
    DATASET_KEYS,
    DEVICE_PATTERN,
    DRAFT_DEFAULTS,
    DRAFT_KEYS,
    DRAFT_NAME_PATTERN,
    DRAFTERS,
    EMBEDDED_MODELS,
    EMBEDDED_PREFIX,
    ENGINES,
    GENERATION_DEFAULTS,
    GENERATION_KEYS,
    MAX_K,
    MAX_NEW_TOKENS,
    MAX_NGRAM,
    MAX_ROUNDS,
    MAX_SEED,
    MAX_WARMUP_ROUNDS,
    TIMING_DEFAULTS,
    TIMING_KEYS,
    DatasetSpec,
    DraftSpec,
    GenerationSpec,
    TimingSpec,
)
from specperf.config.vllm import parse_vllm
from specperf.data.fit import POLICIES
from specperf.data.prompt import DEFAULT_TEMPLATE, render_prompt
from specperf.data.slices import parse_slice
from specperf.data.sources import HF_CONFIGS, SOURCES
from specperf.errors import ConfigError, DataError


def parse_model_name(value: object, at: At) -> str:
    """A hub id, local path or embedded:NAME with NAME in the embedded family."""
    name = check_str(value, at, "embedded:verifier or openai-community/gpt2")
    if name.startswith(EMBEDDED_PREFIX) and name[len(EMBEDDED_PREFIX):] not in EMBEDDED_MODELS:
        family = [EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS]
        raise at.error(value, f"one of {', '.join(family)}, a hub id or a local path",
                       f"{suggest(name, family)}use a model of the embedded family")
    return name


def _check_ngrams(draft: DraftSpec, data: Mapping[str, Any], at: At) -> None:
    """n-gram settings belong to prompt lookup only, and min_ngram may not pass max_ngram."""
    if draft.drafter != "prompt-lookup":
        for key in ("max_ngram", "min_ngram"):
            if key in data:
                raise at.key(key).error(data[key], f"no {key} for drafter {draft.drafter!r}",
                                        f"remove {key}, or set drafter: prompt-lookup")
    if draft.min_ngram > draft.max_ngram:
        raise at.key("min_ngram").error(draft.min_ngram, f"an integer in 1..max_ngram ({draft.max_ngram})",
                                        "lower min_ngram or raise max_ngram")


def _check_draft(draft: DraftSpec, data: Mapping[str, Any], at: At) -> None:
    """Cross-key rules: a model drafter needs a model; prompt lookup has none and runs on specperf."""
    if draft.drafter == "model" and draft.model is None:
        raise ConfigError(f"missing required key 'model' in {at.where} of {at.source} (drafter 'model' "
                          "needs one); fix: add e.g. model: embedded:draft-small, or set drafter: prompt-lookup")
    if draft.drafter == "prompt-lookup" and draft.model is not None:
        raise at.key("model").error(draft.model, "no model for drafter 'prompt-lookup'",
                                    "remove model, or set drafter: model")
    if draft.drafter == "prompt-lookup" and draft.engine == "hf":
        raise at.key("engine").error(draft.engine, "engine 'specperf' or 'vllm' for drafter 'prompt-lookup'",
                                     "remove engine (hf runs model drafts only), or set drafter: model")
    if draft.vllm is not None and draft.engine not in ("vllm", "server"):
        raise at.key("vllm").error(data["vllm"], f"no vllm mapping for engine {draft.engine!r}",
                                   "remove it, or set engine: vllm or server")
    _check_ngrams(draft, data, at)


def _parse_draft(value: object, at: At) -> DraftSpec:
    if value is None:
        raise at.error(value, f"a mapping with keys {', '.join(DRAFT_KEYS)}", "write e.g. "
                       "{name: draft-small, model: embedded:draft-small}")
    data = check_mapping(value, at, DRAFT_KEYS)
    name = check_str(required_key(data, "name", at, "name: draft-small"), at.key("name"), "name: draft-small")
    if not DRAFT_NAME_PATTERN.fullmatch(name):
        raise at.key("name").error(name, "letters, digits, '.', '_' or '-', starting with a letter or digit",
                                   "rename it, e.g. draft-small (it becomes part of test ids)")
    model = data.get("model")
    draft = DraftSpec(
        name=name,
        model=None if model is None else parse_model_name(model, at.key("model")),
        drafter=check_choice(data.get("drafter", DRAFT_DEFAULTS["drafter"]), at.key("drafter"), DRAFTERS),
        engine=check_choice(data.get("engine", DRAFT_DEFAULTS["engine"]), at.key("engine"), ENGINES),
        max_ngram=check_int(data.get("max_ngram", DRAFT_DEFAULTS["max_ngram"]), at.key("max_ngram"), 1, MAX_NGRAM),
        min_ngram=check_int(data.get("min_ngram", DRAFT_DEFAULTS["min_ngram"]), at.key("min_ngram"), 1, MAX_NGRAM),
        vllm=parse_vllm(data["vllm"], at.key("vllm")) if "vllm" in data else None,
    )
    _check_draft(draft, data, at)
    return draft


def parse_drafts(value: object, at: At) -> tuple[DraftSpec, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise at.error(value, "a non-empty list of drafts", "list at least one, e.g. "
                       "drafts: [{name: draft-small, model: embedded:draft-small}]")
    drafts: list[DraftSpec] = []
    for i, item in enumerate(value):
        draft = _parse_draft(item, at.index(i))
        if draft.name in (d.name for d in drafts):
            raise at.index(i).key("name").error(draft.name, "a name no other draft has",
                                                "rename one of the drafts")
        drafts.append(draft)
    return tuple(drafts)


def select_drafts(drafts: Sequence[DraftSpec], names: Sequence[str], at: At) -> tuple[DraftSpec, ...]:
    known = [d.name for d in drafts]
    wanted = as_list(names)
    for i, name in enumerate(wanted):
        if name not in known:
            hint = suggest(name, known) if isinstance(name, str) else ""
            raise at.index(i).error(name, f"one of the suite's drafts: {', '.join(known)}",
                                    f"{hint}pick drafts the suite defines")
    if not wanted:
        raise at.error(names, "at least one draft name", f"pick from {', '.join(known)}")
    return tuple(d for d in drafts if d.name in wanted)


def parse_slices(value: object, at: At, *, single: bool = False) -> tuple[str, ...]:
    """A slice or a non-empty list of slices, as canonical names, without duplicates (one slice with ``single``)."""
    if single and not isinstance(value, str):
        raise at.error(value, "one slice string such as '0:32'", 'write e.g. acceptance_slice: "0:32"')
    if isinstance(value, (list, tuple)) and not value:
        raise at.error(value, "a slice or a non-empty list of slices", 'write e.g. slices: ["0:8"]')
    names: list[str] = []
    for i, item in enumerate(as_list(value)):
        item_at = at.index(i) if isinstance(value, (list, tuple)) else at
        if not isinstance(item, str):
            raise item_at.error(item, "a slice string such as '0:8'", "quote it, e.g. \"0:8\"")
        try:
            name = parse_slice(item).name
        except (DataError, ValueError) as exc:  # ValueError: an integer too long to convert
            raise ConfigError(f"{item_at.source}: {item_at.path}: {exc}") from None
        if name in names:
            raise item_at.error(item, "distinct slices", f"remove the duplicate {name!r}")
        names.append(name)
    return tuple(names)


def _template(value: object, at: At) -> str:
    if not isinstance(value, str):
        raise at.error(value, "a string with {question} and {abstract}", f"write e.g. {DEFAULT_TEMPLATE!r}")
    try:
        render_prompt(value, "question", "abstract")
    except DataError as exc:
        raise ConfigError(f"{at.source}: {at.path}: got {show_value(value)}: {exc}") from None
    return value


def _optional_str(value: object, at: At, example: str) -> str | None:
    return None if value is None else check_str(value, at, example)


def parse_dataset(value: object, at: At) -> DatasetSpec:
    data = check_mapping(value, at, DATASET_KEYS)
    source = check_choice(data.get("source", DATASET_DEFAULTS["source"]), at.key("source"), SOURCES)
    path = _optional_str(data.get("path"), at.key("path"), "path: data/ori_pqal.json")
    if path is None and source in ("pubmedqa-json", "file"):
        raise ConfigError(f"missing required key 'path' in {at.where} of {at.source} (source {source!r} "
                          "reads a local file); fix: add e.g. path: data/ori_pqal.json")
    if path is not None and source == "embedded":
        raise at.key("path").error(path, "no path for source 'embedded' (it is generated in-process)",
                                   "remove path, or set source: file")
    return DatasetSpec(
        source=source,
        path=path,
        hf_config=check_choice(data.get("hf_config", DATASET_DEFAULTS["hf_config"]), at.key("hf_config"), HF_CONFIGS),
        split=_optional_str(data.get("split"), at.key("split"), "split: train"),
        template=_template(data.get("template", DATASET_DEFAULTS["template"]), at.key("template")),
        slices=parse_slices(data.get("slices", DATASET_DEFAULTS["slices"]), at.key("slices")),
        context_policy=check_choice(data.get("context_policy", DATASET_DEFAULTS["context_policy"]),
                                    at.key("context_policy"), POLICIES),
        acceptance_slice=None if data.get("acceptance_slice") is None else parse_slices(
            data["acceptance_slice"], at.key("acceptance_slice"), single=True)[0],
    )


def parse_generation(value: object, at: At) -> GenerationSpec:
    data = check_mapping(value, at, GENERATION_KEYS)
    return GenerationSpec(
        max_new_tokens=check_int(data.get("max_new_tokens", GENERATION_DEFAULTS["max_new_tokens"]),
                                 at.key("max_new_tokens"), 1, MAX_NEW_TOKENS),
        temperature=check_float(data.get("temperature", GENERATION_DEFAULTS["temperature"]), at.key("temperature"),
                                0.0),
        seed=check_int(data.get("seed", GENERATION_DEFAULTS["seed"]), at.key("seed"), 0, MAX_SEED),
        stop_at_eos=check_bool(data.get("stop_at_eos", GENERATION_DEFAULTS["stop_at_eos"]), at.key("stop_at_eos")),
    )


def parse_timing(value: object, at: At) -> TimingSpec:
    data = check_mapping(value, at, TIMING_KEYS)
    return TimingSpec(
        rounds=check_int(data.get("rounds", TIMING_DEFAULTS["rounds"]), at.key("rounds"), 1, MAX_ROUNDS),
        breakdown=check_bool(data.get("breakdown", TIMING_DEFAULTS["breakdown"]), at.key("breakdown")),
        cost_rounds=check_int(data.get("cost_rounds", TIMING_DEFAULTS["cost_rounds"]), at.key("cost_rounds"), 1,
                              MAX_ROUNDS),
        warmup_rounds=check_int(data.get("warmup_rounds", TIMING_DEFAULTS["warmup_rounds"]), at.key("warmup_rounds"), 0,
                                MAX_WARMUP_ROUNDS),
    )


def parse_suite_device(value: object, at: At) -> str:
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
        raise at.error(value, "one of auto, cpu, cuda, cuda:N", "use auto to pick CUDA when available")
    return value


def parse_suite_k(value: object, at: At) -> tuple[int, ...]:
    return check_int_tuple(value, at, 1, MAX_K, "k: [2, 4]")
