"""Thresholds: floors, per-draft overrides, tolerances against a baseline run, and the timing gate; inline in a
suite or from a separate file that overrides the inline values key by key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from specperf.config.checks import At, check_float, check_int, check_mapping, suggest
from specperf.config.schema import MAX_BASELINE_RUNS, Floors, SuiteConfig, Thresholds, TimingGate, Tolerances
from specperf.config.yaml_io import read_yaml
from specperf.errors import ConfigError

# (lo, hi) per key: closed ranges; None = unbounded.
_FLOOR_RANGES: dict[str, tuple[float | None, float | None]] = {
    "min_speedup": (0.0, None), "min_flop_speedup": (0.0, None),
    "min_acceptance": (0.0, 1.0), "min_agreement": (0.0, 1.0), "min_exact_match": (0.0, 1.0),
    "min_tpot_speedup": (0.0, None), "min_throughput_speedup": (0.0, None), "min_slo_attainment": (0.0, 1.0),
}
_TOLERANCE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "acceptance": (0.0, 1.0), "agreement": (0.0, 1.0), "mean_accepted_length": (0.0, None),
    "verifier_calls_per_token": (0.0, None), "flop_speedup": (0.0, None), "exact_match_rate": (0.0, 1.0),
}
THRESHOLD_KEYS = tuple(f.name for f in dataclasses.fields(Thresholds))
TIMING_GATE_KEYS = tuple(f.name for f in dataclasses.fields(TimingGate))


# A per-draft entry overrides only the floors it names, so its unnamed floors are None, not Floors' defaults.
DEFAULT_FLOORS = Floors()
NO_FLOORS = Floors(**{f.name: None for f in dataclasses.fields(Floors)})


def _parse_floors(value: object, at: At, unset: Floors = DEFAULT_FLOORS) -> Floors:
    data = check_mapping(value, at, tuple(_FLOOR_RANGES))
    values = {key: None if item is None else check_float(item, at.key(key), *_FLOOR_RANGES[key])
              for key, item in data.items()}
    return dataclasses.replace(unset, **values)


def _parse_tolerances(value: object, at: At) -> Tolerances:
    data = check_mapping(value, at, tuple(_TOLERANCE_RANGES))
    return Tolerances(**{key: check_float(item, at.key(key), *_TOLERANCE_RANGES[key]) for key, item in data.items()})


def _parse_timing_gate(value: object, at: At) -> TimingGate:
    data = check_mapping(value, at, TIMING_GATE_KEYS)
    gate = TimingGate()
    return TimingGate(
        alpha=check_float(data.get("alpha", gate.alpha), at.key("alpha"), 0.0, 1.0, open_bounds=True),
        min_effect=check_float(data.get("min_effect", gate.min_effect), at.key("min_effect"), 0.0, 1.0),
        run_sd=check_float(data.get("run_sd", gate.run_sd), at.key("run_sd"), 0.0, 1.0),
        min_runs=check_int(data.get("min_runs", gate.min_runs), at.key("min_runs"), 2, MAX_BASELINE_RUNS),
    )


def _parse_draft_floors(value: object, at: At,
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
            raise ConfigError(f"{at.source}: {at.path}: unknown draft {name!r}; {suggest(name, draft_names)}"
                              f"known drafts: {', '.join(draft_names)}; fix: name a draft of the suite or "
                              "remove the entry")
        pairs.append((name, _parse_floors(floors, at.key(name), NO_FLOORS)))
    return tuple(sorted(pairs))


def _check_draft_keys_placement(value: object, at: At, draft_names: Sequence[str] | None) -> None:
    """A draft's name used as a key beside ``default`` (instead of under ``drafts:``) gets its own hint."""
    if not isinstance(value, Mapping) or not draft_names:
        return
    for key in value:
        if isinstance(key, str) and key not in THRESHOLD_KEYS and key in draft_names:
            raise ConfigError(f"{at.source}: {at.path or 'top level'}: key {key!r} is a draft name, but per-draft "
                              f"floors belong under 'drafts'; fix: write drafts: {{{key}: {{min_speedup: 1.2}}}} "
                              "(valid keys here: " + ", ".join(THRESHOLD_KEYS) + ")")


def parse_thresholds_at(value: object, at: At, draft_names: Sequence[str] | None) -> Thresholds:
    _check_draft_keys_placement(value, at, draft_names)
    data = check_mapping(value, at, THRESHOLD_KEYS)
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
    return parse_thresholds_at(data, At(source), draft_names)


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


def merge_thresholds(base: Thresholds, override: object, *,
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
