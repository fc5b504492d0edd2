"""The suite configuration: YAML -> validated, frozen dataclasses, validated once on load.

A suite names a verifier, its drafts, the block sizes ``k``, the prompt data, generation and timing settings, and
the thresholds that gate CI. :func:`load_config` reads a YAML file (``yaml.safe_load`` only); :func:`parse_config`
validates what the YAML parser returned. Every mistake raises :class:`~specperf.errors.ConfigError` naming the file,
the key path (e.g. ``drafts[1].model``), the bad value, what is allowed, and how to fix it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from specperf.config.checks import _as_list, _At, _bool, _choice, _int, _int_tuple, _mapping, _required
from specperf.config.schema import (
    DEFAULT_CONFIG_PATH,
    DTYPES,
    FORWARDS,
    MAX_BATCH_SIZE,
    MAX_THREADS,
    SUITE_DEFAULTS,
    TOP_KEYS,
    SuiteConfig,
)
from specperf.config.sections import (
    _device,
    _model_name,
    _parse_dataset,
    _parse_drafts,
    _parse_generation,
    _parse_k,
    _parse_slices,
    _parse_timing,
    _select_drafts,
)
from specperf.config.thresholds import _parse_thresholds
from specperf.config.vllm import parse_vllm
from specperf.config.yaml_io import read_yaml
from specperf.errors import ConfigError

logger = logging.getLogger(__name__)

CLI_SOURCE = "command-line selection"


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
    threads, unset = top.get("threads"), SUITE_DEFAULTS
    return SuiteConfig(
        verifier=verifier,
        device=_device(top.get("device", unset["device"]), at.key("device")),
        dtype=_choice(top.get("dtype", unset["dtype"]), at.key("dtype"), DTYPES),
        threads=None if threads is None else _int(threads, at.key("threads"), 1, MAX_THREADS),
        trust_remote_code=_bool(top.get("trust_remote_code", unset["trust_remote_code"]),
                                at.key("trust_remote_code")),
        forward=_choice(top.get("forward", unset["forward"]), at.key("forward"), FORWARDS),
        drafts=drafts,
        k=_parse_k(top.get("k", unset["k"]), at.key("k")),
        batch_size=_int_tuple(top.get("batch_size", unset["batch_size"]), at.key("batch_size"), 1, MAX_BATCH_SIZE,
                              "batch_size: [1]"),
        dataset=_parse_dataset(top.get("dataset"), at.key("dataset")),
        generation=_parse_generation(top.get("generation"), at.key("generation")),
        timing=_parse_timing(top.get("timing"), at.key("timing")),
        thresholds=_parse_thresholds(top.get("thresholds"), at.key("thresholds"), [d.name for d in drafts]),
        vllm=parse_vllm(top.get("vllm"), at.key("vllm")),
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


def narrow(config: SuiteConfig, drafts: Sequence[str] | None = None, k: Sequence[int] | None = None,
           slices: Sequence[str] | None = None, batch_size: Sequence[int] | None = None) -> SuiteConfig:
    """A copy of ``config`` restricted to the given drafts (suite order kept), block sizes, slices and batch sizes.

    None keeps a field as it is. An unknown draft name is a ConfigError; ``k``, ``slices`` and ``batch_size``
    replace the suite's lists and may hold values the suite lacks, validated as in the YAML. Thresholds are kept
    whole (apply a thresholds file before narrowing).
    """
    at = _At(CLI_SOURCE)
    chosen = config.drafts if drafts is None else _select_drafts(config.drafts, drafts, at.key("drafts"))
    block_sizes = config.k if k is None else _parse_k(_as_list(k), at.key("k"))
    dataset = config.dataset
    if slices is not None:
        dataset = dataclasses.replace(dataset, slices=_parse_slices(_as_list(slices), at.key("dataset").key("slices")))
    sizes = config.batch_size if batch_size is None else _int_tuple(
        _as_list(batch_size), at.key("batch_size"), 1, MAX_BATCH_SIZE, "--specperf-batch=1,8")
    return dataclasses.replace(config, drafts=chosen, k=block_sizes, dataset=dataset, batch_size=sizes)
