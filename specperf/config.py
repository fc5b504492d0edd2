"""The suite configuration: YAML -> validated, frozen dataclasses, validated once on load.

A suite names a verifier, its drafts, the block sizes ``k``, the prompt data, generation and
timing settings, and the thresholds that gate CI. :func:`load_config` reads a YAML file
(``yaml.safe_load`` only); :func:`parse_config` validates what the YAML parser returned.
Every mistake raises :class:`~specperf.errors.ConfigError` naming the file, the key path
(e.g. ``drafts[1].model``), the bad value, what is allowed, and how to fix it.

Thresholds come inline (``thresholds:``) or from a separate file; a file overrides the inline
values key by key (:func:`merge_thresholds`, :func:`apply_thresholds_file`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from specperf.data import DEFAULT_TEMPLATE, HF_CONFIGS, POLICIES, SOURCES, parse_slice, render_prompt
from specperf.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parent / "suites"
# The suite used when none is given: the embedded models and synthetic data, no network.
DEFAULT_CONFIG_PATH = SUITES_DIR / "embedded.yaml"

DTYPES = ("float32", "float16", "bfloat16")
DRAFTERS = ("model", "prompt-lookup")
ENGINES = ("specperf", "hf")
EMBEDDED_PREFIX = "embedded:"
# Kept in sync with specperf.models.EMBEDDED_MODELS (not imported: that module needs torch).
EMBEDDED_MODELS = ("verifier", "draft-small", "draft-medium", "draft-large")
MAX_K = 64  # as specperf.decoding.engine.MAX_K
MAX_NGRAM = 16
MAX_NEW_TOKENS = 4096
MAX_ROUNDS = 1000
MAX_WARMUP_ROUNDS = 100
MAX_SEED = 2**32 - 1  # numpy's and most RNGs' seed range
# Unbounded ints are capped too: 16**5000 is valid YAML, and more digits than json.dumps (config_hash) may print.
MAX_THREADS = 4096
MAX_BATCH_SIZE = 4096
_DRAFT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
_SHOW_CHARS = 80  # longest repr of a bad value quoted in an error message
CLI_SOURCE = "command-line selection"


# =========================================================================== dataclasses


@dataclass(frozen=True)
class Floors:
    """Lower bounds a draft case must reach; None = not gated."""

    min_speedup: float | None = None  # walltime speedup over the verifier-only baseline
    min_flop_speedup: float | None = None  # speedup in FLOPs (hardware-independent)
    min_acceptance: float | None = None  # accepted / proposed draft tokens, 0..1
    min_agreement: float | None = None  # per-token agreement with the baseline, 0..1
    min_exact_match: float | None = 1.0  # greedy requests identical to the baseline (near-ties allowed in fp16/bf16)


@dataclass(frozen=True)
class Tolerances:
    """Allowed drops relative to a baseline run (--specperf-baseline)."""

    acceptance: float = 0.002  # absolute drop in acceptance
    agreement: float = 0.002  # absolute drop in agreement
    mean_accepted_length: float = 0.01  # relative drop in tokens per verifier call
    verifier_calls_per_token: float = 0.01  # relative increase
    flop_speedup: float = 0.01  # relative drop
    exact_match_rate: float = 0.0  # absolute drop: greedy output must not diverge more often


@dataclass(frozen=True)
class TimingGate:
    """The noise-aware timing gate: fail only on a significant AND large slowdown."""

    # Measured by perf/gate_quality.py on a shared 2-core CPU (10 paired rounds, 1 thread): with these two values
    # no false alarm in 64 run pairs of unchanged code, and a 15% slower speculative path caught in 67 of 72.
    alpha: float = 0.05  # one-sided Mann-Whitney significance level, 0 < alpha < 1
    min_effect: float = 0.05  # smallest relative drop of the median per-round speedup that may fail, 0..1


@dataclass(frozen=True)
class Thresholds:
    """Floors for every case, per-draft overrides, baseline tolerances and the timing gate."""

    default: Floors = Floors()  # floors for every draft case
    drafts: tuple[tuple[str, Floors], ...] = ()  # (draft name, overrides), sorted by name
    tolerances: Tolerances = Tolerances()  # allowed drops against a baseline run
    timing: TimingGate = TimingGate()  # significance and effect size of timing regressions

    def floors_for(self, draft: str) -> Floors:
        """The default floors with ``draft``'s overrides (its non-None values) applied."""
        override = dict(self.drafts).get(draft)
        if override is None:
            return self.default
        changes = {f.name: getattr(override, f.name) for f in dataclasses.fields(Floors)
                   if getattr(override, f.name) is not None}
        return dataclasses.replace(self.default, **changes)


@dataclass(frozen=True)
class DraftSpec:
    """One draft: a model (or prompt lookup) and the engine that runs it."""

    name: str  # unique; appears in test ids
    model: str | None = None  # hub id, local path or embedded:NAME; None for prompt-lookup
    drafter: str = "model"  # model | prompt-lookup
    engine: str = "specperf"  # specperf | hf (transformers assisted generation)
    max_ngram: int = 3  # prompt-lookup: longest n-gram matched
    min_ngram: int = 1  # prompt-lookup: shortest n-gram matched


@dataclass(frozen=True)
class DatasetSpec:
    """Where prompts come from and which of them are used."""

    source: str = "embedded"  # hf | pubmedqa-json | file | embedded
    path: str | None = None  # file for pubmedqa-json/file; dataset name or local data for hf
    hf_config: str = "pqa_labeled"  # PubMedQA config (source hf)
    split: str | None = None  # None = the source's default split
    template: str = DEFAULT_TEMPLATE  # prompt format with {question} and {abstract}
    slices: tuple[str, ...] = ("0:8",)  # canonical slice names (specperf.data.SliceSpec.name)
    context_policy: str = "truncate-abstract"  # what to do with a prompt that does not fit


@dataclass(frozen=True)
class GenerationSpec:
    """How each request decodes."""

    max_new_tokens: int = 64  # new tokens per request
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0  # sampling seed (temperature > 0)
    stop_at_eos: bool = False  # stop a request at the tokenizer's EOS token


@dataclass(frozen=True)
class TimingSpec:
    """How often each case runs."""

    rounds: int = 5  # timed rounds per case
    warmup_rounds: int = 1  # untimed rounds first (caches, allocator, kernels)


@dataclass(frozen=True, kw_only=True)
class SuiteConfig:
    """A validated benchmark suite (see :func:`parse_config` for the YAML schema)."""

    verifier: str  # hub id, local path or embedded:NAME
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float16 | bfloat16
    threads: int | None = None  # torch CPU threads; None = torch's default
    trust_remote_code: bool = False  # run code shipped with hub models
    drafts: tuple[DraftSpec, ...]  # at least one, unique names
    k: tuple[int, ...] = (4,)  # block sizes, each 1..64
    batch_size: tuple[int, ...] = (1,)  # requests decoded together; each size is an axis value of the suite
    dataset: DatasetSpec = DatasetSpec()  # prompt data
    generation: GenerationSpec = GenerationSpec()  # decoding settings
    timing: TimingSpec = TimingSpec()  # rounds per case
    thresholds: Thresholds = Thresholds()  # CI gates

    @property
    def draft_names(self) -> tuple[str, ...]:
        """The drafts' names, in suite order."""
        return tuple(d.name for d in self.drafts)

    def narrowed(self, drafts: Sequence[str] | None = None, k: Sequence[int] | None = None,
                 slices: Sequence[str] | None = None, batch_size: Sequence[int] | None = None) -> SuiteConfig:
        """A copy restricted to the given drafts (suite order kept), block sizes, slices and batch sizes.

        None keeps a field as it is. An unknown draft name is a ConfigError; ``k``, ``slices``
        and ``batch_size`` replace the suite's lists and may hold values the suite lacks, validated
        as in the YAML. Thresholds are kept whole (apply a thresholds file before narrowing).
        """
        at = _At(CLI_SOURCE)
        chosen = self.drafts if drafts is None else _select_drafts(self.drafts, drafts, at.key("drafts"))
        block_sizes = self.k if k is None else _parse_k(_as_list(k), at.key("k"))
        dataset = self.dataset
        if slices is not None:
            dataset = dataclasses.replace(
                dataset, slices=_parse_slices(_as_list(slices), at.key("dataset").key("slices")))
        sizes = self.batch_size if batch_size is None else _int_tuple(
            _as_list(batch_size), at.key("batch_size"), 1, MAX_BATCH_SIZE, "--specperf-batch=1,8")
        return dataclasses.replace(self, drafts=chosen, k=block_sizes, dataset=dataset, batch_size=sizes)


# =========================================================================== error helpers


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


# Bounded repr: a YAML file can nest aliases into a value with billions of leaves (a "billion laughs" document),
# whose full repr would never finish; this one stops at a few levels and items.
class _BoundedRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python converts to text (sys.get_int_max_str_digits)
            return f"<an integer of {x.bit_length()} bits>"


_REPR = _BoundedRepr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 4, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = _SHOW_CHARS, _SHOW_CHARS, _SHOW_CHARS


def _show(value: object) -> str:
    """A short ``repr`` of a bad value with its YAML-ish type, for error messages."""
    text = _REPR.repr(value)
    if len(text) > _SHOW_CHARS:
        text = text[:_SHOW_CHARS - 3] + "..."
    return f"{text} ({_type_name(value)})"


@dataclass(frozen=True)
class _At:
    """Where a value sits: its source (file name) and key path, e.g. ``drafts[1].model``."""

    source: str
    path: str = ""

    def key(self, name: str) -> _At:
        return _At(self.source, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int) -> _At:
        return _At(self.source, f"{self.path}[{i}]")

    @property
    def where(self) -> str:
        return f"'{self.path}'" if self.path else "top level"

    def error(self, value: object, expected: str, fix: str) -> ConfigError:
        """'source: path: got VALUE (type); expected ALLOWED; fix: FIX'."""
        return ConfigError(f"{self.source}: {self.path or 'top level'}: got {_show(value)}; "
                           f"expected {expected}; fix: {fix}")


def _suggest(word: object, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _unknown_key(key: object, at: _At, keys: Sequence[str]) -> ConfigError:
    place = "at top level" if not at.path else f"in {at.where}"
    return ConfigError(f"unknown key {key!r} {place} of {at.source}; {_suggest(key, keys)}"
                       f"valid keys: {', '.join(keys)}; fix: rename or remove it")


# =========================================================================== scalar validators


def _mapping(value: object, at: _At, keys: Sequence[str]) -> dict[str, Any]:
    """``value`` as a dict whose keys are all in ``keys``; null counts as an empty mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise at.error(value, f"a mapping with keys {', '.join(keys)}", "write it as 'key: value' lines")
    for key in value:
        if not isinstance(key, str) or key not in keys:
            raise _unknown_key(key, at, keys)
    return dict(value)


def _required(data: Mapping[str, Any], key: str, at: _At, example: str) -> Any:
    if key not in data:
        raise ConfigError(f"missing required key {key!r} {'at top level' if not at.path else 'in ' + at.where} "
                          f"of {at.source}; fix: add it, e.g. {example}")
    return data[key]


def _str(value: object, at: _At, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise at.error(value, "a non-empty string", f"write e.g. {example}")
    return value


def _choice(value: object, at: _At, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        raise at.error(value, f"one of {', '.join(choices)}", f"{hint}use one of the allowed values")
    return value


def _bool(value: object, at: _At) -> bool:
    if not isinstance(value, bool):
        raise at.error(value, "a boolean (true or false)", "write true or false, unquoted")
    return value


def _int(value: object, at: _At, lo: int, hi: int | None = None) -> int:
    """An int (not a bool) in [lo, hi] (no upper bound when hi is None)."""
    allowed = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.error(value, allowed, "write a plain integer, unquoted")
    if value < lo or (hi is not None and value > hi):
        raise at.error(value, allowed, "use a value in the allowed range")
    return value


def _describe_range(lo: float | None, hi: float | None, open_bounds: bool) -> str:
    if lo is not None and hi is not None:
        return f"a number in {'(' if open_bounds else '['}{lo:g}, {hi:g}{')' if open_bounds else ']'}"
    return f"a number {'>' if open_bounds else '>='} {lo:g}" if lo is not None else "a number"


def _float(value: object, at: _At, lo: float | None = None, hi: float | None = None,
           *, open_bounds: bool = False) -> float:
    """A finite number (int or float, not bool) within [lo, hi], or (lo, hi) if open_bounds."""
    allowed = _describe_range(lo, hi, open_bounds)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise at.error(value, allowed, "write a plain number, unquoted")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise at.error(value, allowed, "use a value in the allowed range") from None
    below = lo is not None and (number <= lo if open_bounds else number < lo)
    above = hi is not None and (number >= hi if open_bounds else number > hi)
    if not math.isfinite(number) or below or above:
        raise at.error(value, allowed, "use a finite value in the allowed range")
    return number


def _as_list(value: object) -> list[Any]:
    """A scalar or string as a one-element list; a list, tuple or range as a list."""
    return list(value) if isinstance(value, (list, tuple, range)) else [value]


def _int_tuple(value: object, at: _At, lo: int, hi: int | None, example: str) -> tuple[int, ...]:
    """An int or a non-empty list of distinct ints, each in [lo, hi]."""
    if isinstance(value, (list, tuple)) and not value:
        raise at.error(value, "an integer or a non-empty list of integers", f"write e.g. {example}")
    items = _as_list(value)
    numbers: list[int] = []
    for i, item in enumerate(items):
        item_at = at.index(i) if isinstance(value, (list, tuple)) else at
        number = _int(item, item_at, lo, hi)
        if number in numbers:
            raise item_at.error(item, "distinct values", f"remove the duplicate {number}")
        numbers.append(number)
    return tuple(numbers)


def _parse_k(value: object, at: _At) -> tuple[int, ...]:
    return _int_tuple(value, at, 1, MAX_K, "k: [2, 4]")


# =========================================================================== suite sections


DRAFT_KEYS = tuple(f.name for f in dataclasses.fields(DraftSpec))
DATASET_KEYS = tuple(f.name for f in dataclasses.fields(DatasetSpec))
GENERATION_KEYS = tuple(f.name for f in dataclasses.fields(GenerationSpec))
TIMING_KEYS = tuple(f.name for f in dataclasses.fields(TimingSpec))
TOP_KEYS = tuple(f.name for f in dataclasses.fields(SuiteConfig))


def _model_name(value: object, at: _At) -> str:
    """A hub id, local path or embedded:NAME with NAME in the embedded family."""
    name = _str(value, at, "embedded:verifier or openai-community/gpt2")
    if name.startswith(EMBEDDED_PREFIX) and name[len(EMBEDDED_PREFIX):] not in EMBEDDED_MODELS:
        family = [EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS]
        raise at.error(value, f"one of {', '.join(family)}, a hub id or a local path",
                       f"{_suggest(name, family)}use a model of the embedded family")
    return name


def _check_ngrams(draft: DraftSpec, data: Mapping[str, Any], at: _At) -> None:
    """n-gram settings belong to prompt lookup only, and min_ngram may not pass max_ngram."""
    if draft.drafter != "prompt-lookup":
        for key in ("max_ngram", "min_ngram"):
            if key in data:
                raise at.key(key).error(data[key], f"no {key} for drafter {draft.drafter!r}",
                                        f"remove {key}, or set drafter: prompt-lookup")
    if draft.min_ngram > draft.max_ngram:
        raise at.key("min_ngram").error(draft.min_ngram, f"an integer in 1..max_ngram ({draft.max_ngram})",
                                        "lower min_ngram or raise max_ngram")


def _check_draft(draft: DraftSpec, data: Mapping[str, Any], at: _At) -> None:
    """Cross-key rules: a model drafter needs a model; prompt lookup has none and runs on specperf."""
    if draft.drafter == "model" and draft.model is None:
        raise ConfigError(f"missing required key 'model' in {at.where} of {at.source} (drafter 'model' "
                          "needs one); fix: add e.g. model: embedded:draft-small, or set drafter: prompt-lookup")
    if draft.drafter == "prompt-lookup" and draft.model is not None:
        raise at.key("model").error(draft.model, "no model for drafter 'prompt-lookup'",
                                    "remove model, or set drafter: model")
    if draft.drafter == "prompt-lookup" and draft.engine == "hf":
        raise at.key("engine").error(draft.engine, "engine 'specperf' for drafter 'prompt-lookup'",
                                     "remove engine (hf runs model drafts only), or set drafter: model")
    _check_ngrams(draft, data, at)


def _parse_draft(value: object, at: _At) -> DraftSpec:
    if value is None:
        raise at.error(value, f"a mapping with keys {', '.join(DRAFT_KEYS)}", "write e.g. "
                       "{name: draft-small, model: embedded:draft-small}")
    data = _mapping(value, at, DRAFT_KEYS)
    name = _str(_required(data, "name", at, "name: draft-small"), at.key("name"), "name: draft-small")
    if not _DRAFT_NAME.fullmatch(name):
        raise at.key("name").error(name, "letters, digits, '.', '_' or '-', starting with a letter or digit",
                                   "rename it, e.g. draft-small (it becomes part of test ids)")
    model = data.get("model")
    draft = DraftSpec(
        name=name,
        model=None if model is None else _model_name(model, at.key("model")),
        drafter=_choice(data.get("drafter", "model"), at.key("drafter"), DRAFTERS),
        engine=_choice(data.get("engine", "specperf"), at.key("engine"), ENGINES),
        max_ngram=_int(data.get("max_ngram", 3), at.key("max_ngram"), 1, MAX_NGRAM),
        min_ngram=_int(data.get("min_ngram", 1), at.key("min_ngram"), 1, MAX_NGRAM),
    )
    _check_draft(draft, data, at)
    return draft


def _parse_drafts(value: object, at: _At) -> tuple[DraftSpec, ...]:
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


def _select_drafts(drafts: Sequence[DraftSpec], names: Sequence[str], at: _At) -> tuple[DraftSpec, ...]:
    known = [d.name for d in drafts]
    wanted = _as_list(names)
    for i, name in enumerate(wanted):
        if name not in known:
            hint = _suggest(name, known) if isinstance(name, str) else ""
            raise at.index(i).error(name, f"one of the suite's drafts: {', '.join(known)}",
                                    f"{hint}pick drafts the suite defines")
    if not wanted:
        raise at.error(names, "at least one draft name", f"pick from {', '.join(known)}")
    return tuple(d for d in drafts if d.name in wanted)


def _parse_slices(value: object, at: _At) -> tuple[str, ...]:
    """A slice or a non-empty list of slices, as canonical names, without duplicates."""
    if isinstance(value, (list, tuple)) and not value:
        raise at.error(value, "a slice or a non-empty list of slices", 'write e.g. slices: ["0:8"]')
    names: list[str] = []
    for i, item in enumerate(_as_list(value)):
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


def _template(value: object, at: _At) -> str:
    if not isinstance(value, str):
        raise at.error(value, "a string with {question} and {abstract}", f"write e.g. {DEFAULT_TEMPLATE!r}")
    try:
        render_prompt(value, "question", "abstract")
    except DataError as exc:
        raise ConfigError(f"{at.source}: {at.path}: got {_show(value)}: {exc}") from None
    return value


def _optional_str(value: object, at: _At, example: str) -> str | None:
    return None if value is None else _str(value, at, example)


def _parse_dataset(value: object, at: _At) -> DatasetSpec:
    data = _mapping(value, at, DATASET_KEYS)
    source = _choice(data.get("source", "embedded"), at.key("source"), SOURCES)
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
        hf_config=_choice(data.get("hf_config", "pqa_labeled"), at.key("hf_config"), HF_CONFIGS),
        split=_optional_str(data.get("split"), at.key("split"), "split: train"),
        template=_template(data.get("template", DEFAULT_TEMPLATE), at.key("template")),
        slices=_parse_slices(data.get("slices", ["0:8"]), at.key("slices")),
        context_policy=_choice(data.get("context_policy", "truncate-abstract"),
                               at.key("context_policy"), POLICIES),
    )


def _parse_generation(value: object, at: _At) -> GenerationSpec:
    data = _mapping(value, at, GENERATION_KEYS)
    return GenerationSpec(
        max_new_tokens=_int(data.get("max_new_tokens", 64), at.key("max_new_tokens"), 1, MAX_NEW_TOKENS),
        temperature=_float(data.get("temperature", 0.0), at.key("temperature"), 0.0),
        seed=_int(data.get("seed", 0), at.key("seed"), 0, MAX_SEED),
        stop_at_eos=_bool(data.get("stop_at_eos", False), at.key("stop_at_eos")),
    )


def _parse_timing(value: object, at: _At) -> TimingSpec:
    data = _mapping(value, at, TIMING_KEYS)
    return TimingSpec(
        rounds=_int(data.get("rounds", 5), at.key("rounds"), 1, MAX_ROUNDS),
        warmup_rounds=_int(data.get("warmup_rounds", 1), at.key("warmup_rounds"), 0, MAX_WARMUP_ROUNDS),
    )


def _device(value: object, at: _At) -> str:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise at.error(value, "one of auto, cpu, cuda, cuda:N", "use auto to pick CUDA when available")
    return value


# =========================================================================== thresholds


# (lo, hi) per key: closed ranges; None = unbounded.
_FLOOR_RANGES: dict[str, tuple[float | None, float | None]] = {
    "min_speedup": (0.0, None), "min_flop_speedup": (0.0, None),
    "min_acceptance": (0.0, 1.0), "min_agreement": (0.0, 1.0), "min_exact_match": (0.0, 1.0),
}
_TOLERANCE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "acceptance": (0.0, 1.0), "agreement": (0.0, 1.0), "mean_accepted_length": (0.0, None),
    "verifier_calls_per_token": (0.0, None), "flop_speedup": (0.0, None), "exact_match_rate": (0.0, 1.0),
}
THRESHOLD_KEYS = tuple(f.name for f in dataclasses.fields(Thresholds))
TIMING_GATE_KEYS = tuple(f.name for f in dataclasses.fields(TimingGate))


# A per-draft entry overrides only the floors it names, so its unnamed floors are None, not Floors' defaults.
NO_FLOORS = Floors(**{f.name: None for f in dataclasses.fields(Floors)})


def _parse_floors(value: object, at: _At, unset: Floors = Floors()) -> Floors:
    data = _mapping(value, at, tuple(_FLOOR_RANGES))
    values = {key: None if item is None else _float(item, at.key(key), *_FLOOR_RANGES[key])
              for key, item in data.items()}
    return dataclasses.replace(unset, **values)


def _parse_tolerances(value: object, at: _At) -> Tolerances:
    data = _mapping(value, at, tuple(_TOLERANCE_RANGES))
    return Tolerances(**{key: _float(item, at.key(key), *_TOLERANCE_RANGES[key]) for key, item in data.items()})


def _parse_timing_gate(value: object, at: _At) -> TimingGate:
    data = _mapping(value, at, TIMING_GATE_KEYS)
    gate = TimingGate()
    return TimingGate(
        alpha=_float(data.get("alpha", gate.alpha), at.key("alpha"), 0.0, 1.0, open_bounds=True),
        min_effect=_float(data.get("min_effect", gate.min_effect), at.key("min_effect"), 0.0, 1.0),
    )


def _parse_draft_floors(value: object, at: _At,
                        draft_names: Sequence[str] | None) -> tuple[tuple[str, Floors], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise at.error(value, "a mapping of draft name to floors", "write e.g. drafts: {draft-small: "
                       "{min_speedup: 1.3}}")
    pairs: list[tuple[str, Floors]] = []
    for name, floors in value.items():
        if not isinstance(name, str):
            raise at.error(name, "a draft name (a string) as key", "quote the draft name")
        if draft_names is not None and name not in draft_names:
            raise ConfigError(f"{at.source}: {at.path}: unknown draft {name!r}; {_suggest(name, draft_names)}"
                              f"known drafts: {', '.join(draft_names)}; fix: name a draft of the suite or "
                              "remove the entry")
        pairs.append((name, _parse_floors(floors, at.key(name), NO_FLOORS)))
    return tuple(sorted(pairs))


def _check_draft_keys_placement(value: object, at: _At, draft_names: Sequence[str] | None) -> None:
    """A draft's name used as a key beside ``default`` (instead of under ``drafts:``) gets its own hint."""
    if not isinstance(value, Mapping) or not draft_names:
        return
    for key in value:
        if isinstance(key, str) and key not in THRESHOLD_KEYS and key in draft_names:
            raise ConfigError(f"{at.source}: {at.path or 'top level'}: key {key!r} is a draft name, but per-draft "
                              f"floors belong under 'drafts'; fix: write drafts: {{{key}: {{min_speedup: 1.2}}}} "
                              "(valid keys here: " + ", ".join(THRESHOLD_KEYS) + ")")


def _parse_thresholds(value: object, at: _At, draft_names: Sequence[str] | None) -> Thresholds:
    _check_draft_keys_placement(value, at, draft_names)
    data = _mapping(value, at, THRESHOLD_KEYS)
    return Thresholds(
        default=_parse_floors(data.get("default"), at.key("default")),
        drafts=_parse_draft_floors(data.get("drafts"), at.key("drafts"), draft_names),
        tolerances=_parse_tolerances(data.get("tolerances"), at.key("tolerances")),
        timing=_parse_timing_gate(data.get("timing"), at.key("timing")),
    )


def parse_thresholds(data: object, *, source: str = "<thresholds>",
                     draft_names: Sequence[str] | None = None) -> Thresholds:
    """Validate thresholds (the ``thresholds:`` schema) as returned by ``yaml.safe_load``.

    null (an empty file) means all defaults. With ``draft_names``, a per-draft entry naming
    none of them is a ConfigError.
    """
    return _parse_thresholds(data, _At(source), draft_names)


def load_thresholds(path: str | Path, *, draft_names: Sequence[str] | None = None) -> Thresholds:
    """Read and validate a thresholds YAML file (see :func:`parse_thresholds`)."""
    return parse_thresholds(read_yaml(path), source=str(path), draft_names=draft_names)


def _thresholds_data(thresholds: Thresholds) -> dict[str, Any]:
    """The YAML-shaped data that parses back into ``thresholds``."""
    tree = dataclasses.asdict(thresholds)
    tree["drafts"] = {name: dataclasses.asdict(floors) for name, floors in thresholds.drafts}
    return tree


def _deep_merge(base: Any, override: Any) -> Any:
    """``override`` over ``base`` key by key; a null section keeps the base section."""
    if isinstance(base, dict) and override is None:
        return base
    if not (isinstance(base, dict) and isinstance(override, Mapping)):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(base[key], value) if key in base else value
    return merged


def _changed(obj: Any, unset: Any) -> dict[str, Any]:
    """The fields of dataclass ``obj`` whose values differ from those of ``unset``."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if getattr(obj, f.name) != getattr(unset, f.name)}


def _set_values(thresholds: Thresholds) -> dict[str, Any]:
    """The values of ``thresholds`` that count as set: non-None floors, non-default rest."""
    return {"default": _changed(thresholds.default, Floors()),
            "drafts": {name: _changed(floors, NO_FLOORS) for name, floors in thresholds.drafts},
            "tolerances": _changed(thresholds.tolerances, Tolerances()),
            "timing": _changed(thresholds.timing, TimingGate())}


def merge_thresholds(base: Thresholds, override: Thresholds | Mapping[str, Any] | None, *,
                     source: str = "<thresholds>", draft_names: Sequence[str] | None = None) -> Thresholds:
    """``base`` with ``override`` applied key by key (per section, per draft, per floor).

    ``override`` is thresholds YAML data (as ``yaml.safe_load`` returned it; exact: every key
    it sets wins, and an explicit null floor removes that floor), or a parsed Thresholds, in
    which case only its set values win: non-None floors, and tolerances/timing values that
    differ from the defaults. With ``draft_names``, per-draft entries must name one of them.
    Errors name ``source``.
    """
    data = _set_values(override) if isinstance(override, Thresholds) else override
    parse_thresholds(data, source=source, draft_names=draft_names)  # precise errors first
    merged = _deep_merge(_thresholds_data(base), data)
    return parse_thresholds(merged, source=source)


def apply_thresholds_file(config: SuiteConfig, path: str | Path) -> SuiteConfig:
    """``config`` with the thresholds file at ``path`` merged over its inline thresholds."""
    thresholds = merge_thresholds(config.thresholds, read_yaml(path), source=str(path),
                                  draft_names=config.draft_names)
    return dataclasses.replace(config, thresholds=thresholds)


# =========================================================================== YAML and entry points


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> ConfigError:
    """ConfigError with the file, line, column and the parser's own words."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    else:  # ReaderError (bad characters) only knows its character offset
        position = min(getattr(exc, "position", 0), len(text))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        problem = getattr(exc, "reason", None)
    detail = problem or next(iter(str(exc).splitlines()), type(exc).__name__)
    return ConfigError(f"{source}:{line}:{column}: YAML syntax error at line {line}, column {column}: "
                       f"{detail}; fix: correct the YAML there (indentation, ':' after keys, quotes around "
                       "strings that contain ':', '#', '{' or '[')")


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        # PyYAML lets some scalar constructors fail raw: the date 2024-13-01 (ValueError), a bare '!!int' or
        # '!!float' tag without a value (IndexError).
        raise ConfigError(f"{source}: YAML value cannot be read ({type(exc).__name__}: {exc}); fix: quote the "
                          "value if it is meant as a string, and give an explicit tag such as !!int a value of "
                          "its type") from None


def read_yaml(path: str | Path) -> object:
    """``yaml.safe_load`` of a UTF-8 file; every failure is a ConfigError naming the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} does not exist; fix: pass an existing YAML file "
                          f"(the default suite is {DEFAULT_CONFIG_PATH})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "fix: save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(file)!r} ({exc.strerror or exc}); "
                          "fix: pass a readable YAML file") from None
    return _parse_yaml(text, str(file))


def parse_config(data: object, *, source: str = "<config>") -> SuiteConfig:
    """Validate a suite (what ``yaml.safe_load`` returned) into a :class:`SuiteConfig`.

    Required keys: ``verifier`` and ``drafts``; see ``specperf/suites/embedded.yaml`` for the
    whole schema with its defaults. Raises ConfigError for anything else.
    """
    at = _At(source)
    if data is None:
        raise ConfigError(f"{source} is empty; fix: write a suite with at least 'verifier' and 'drafts', "
                          f"as in {DEFAULT_CONFIG_PATH}")
    top = _mapping(data, at, TOP_KEYS)
    verifier = _model_name(_required(top, "verifier", at, "verifier: embedded:verifier"), at.key("verifier"))
    drafts = _parse_drafts(_required(top, "drafts", at, "drafts: [{name: draft-small, model: "
                                     "embedded:draft-small}]"), at.key("drafts"))
    threads = top.get("threads")
    return SuiteConfig(
        verifier=verifier,
        device=_device(top.get("device", "auto"), at.key("device")),
        dtype=_choice(top.get("dtype", "float32"), at.key("dtype"), DTYPES),
        threads=None if threads is None else _int(threads, at.key("threads"), 1, MAX_THREADS),
        trust_remote_code=_bool(top.get("trust_remote_code", False), at.key("trust_remote_code")),
        drafts=drafts,
        k=_parse_k(top.get("k", 4), at.key("k")),
        batch_size=_int_tuple(top.get("batch_size", 1), at.key("batch_size"), 1, MAX_BATCH_SIZE,
                              "batch_size: [1]"),
        dataset=_parse_dataset(top.get("dataset"), at.key("dataset")),
        generation=_parse_generation(top.get("generation"), at.key("generation")),
        timing=_parse_timing(top.get("timing"), at.key("timing")),
        thresholds=_parse_thresholds(top.get("thresholds"), at.key("thresholds"), [d.name for d in drafts]),
    )


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> SuiteConfig:
    """Read and validate the suite YAML at ``path`` (default: the embedded suite)."""
    config = parse_config(read_yaml(path), source=str(path))
    logger.debug("loaded suite %s (config hash %s)", path, config_hash(config))
    return config


def config_hash(config: SuiteConfig) -> str:
    """First 16 hex digits of the sha256 of the config's canonical JSON (stable across runs)."""
    canonical = json.dumps(dataclasses.asdict(config), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


__all__ = [
    "DEFAULT_CONFIG_PATH", "DatasetSpec", "DraftSpec", "Floors", "GenerationSpec", "SUITES_DIR", "SuiteConfig",
    "Thresholds", "TimingGate", "TimingSpec", "Tolerances", "apply_thresholds_file", "config_hash",
    "load_config", "load_thresholds", "merge_thresholds", "parse_config", "parse_thresholds", "read_yaml",
]
