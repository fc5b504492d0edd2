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

from specperf.config.checks import (
    At,
    as_list,
    check_bool,
    check_choice,
    check_int,
    check_int_tuple,
    check_mapping,
    required_key,
)
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
    parse_dataset,
    parse_drafts,
    parse_generation,
    parse_model_name,
    parse_slices,
    parse_suite_device,
    parse_suite_k,
    parse_timing,
    select_drafts,
)
from specperf.config.serving import parse_serving
from specperf.config.thresholds import parse_thresholds_at
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
    at = At(source)
    if data is None:
        raise ConfigError(f"{source} is empty; fix: write a suite with at least 'verifier' and 'drafts', "
                          f"as in {DEFAULT_CONFIG_PATH}")
    top = check_mapping(data, at, TOP_KEYS)
    verifier = parse_model_name(required_key(top, "verifier", at, "verifier: embedded:verifier"), at.key("verifier"))
    drafts = parse_drafts(required_key(top, "drafts", at, "drafts: [{name: draft-small, model: "
                                       "embedded:draft-small}]"), at.key("drafts"))
    threads, unset = top.get("threads"), SUITE_DEFAULTS
    config = SuiteConfig(
        verifier=verifier,
        device=parse_suite_device(top.get("device", unset["device"]), at.key("device")),
        dtype=check_choice(top.get("dtype", unset["dtype"]), at.key("dtype"), DTYPES),
        threads=None if threads is None else check_int(threads, at.key("threads"), 1, MAX_THREADS),
        trust_remote_code=check_bool(top.get("trust_remote_code", unset["trust_remote_code"]),
                                     at.key("trust_remote_code")),
        forward=check_choice(top.get("forward", unset["forward"]), at.key("forward"), FORWARDS),
        drafts=drafts,
        k=parse_suite_k(top.get("k", unset["k"]), at.key("k")),
        batch_size=check_int_tuple(top.get("batch_size", unset["batch_size"]), at.key("batch_size"), 1,
                                   MAX_BATCH_SIZE, "batch_size: [1]"),
        dataset=parse_dataset(top.get("dataset"), at.key("dataset")),
        generation=parse_generation(top.get("generation"), at.key("generation")),
        timing=parse_timing(top.get("timing"), at.key("timing")),
        thresholds=parse_thresholds_at(top.get("thresholds"), at.key("thresholds"), [d.name for d in drafts]),
        vllm=parse_vllm(top.get("vllm"), at.key("vllm")),
        serving=parse_serving(top.get("serving"), at.key("serving")),
    )
    _check_attached(config, at)
    return config


def _check_attached(config: SuiteConfig, at: At) -> None:
    """Servers someone else runs have one draft and one k each: the suite must not ask for more."""
    if not config.serving.attached:
        return
    served = [d.name for d in config.drafts if d.engine == "server"]
    if len(served) > 1 or len(config.k) > 1:
        raise ConfigError(f"{at.source}: serving.url attaches to one running server, which runs one draft at one "
                          f"k, but the suite has {len(served)} engine: server draft(s) ({', '.join(served)}) and k "
                          f"{list(config.k)}; fix: keep one server draft and set k to the server's "
                          "num_speculative_tokens (or let specperf start the servers: remove url and baseline_url)")


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
    at = At(CLI_SOURCE)
    chosen = config.drafts if drafts is None else select_drafts(config.drafts, drafts, at.key("drafts"))
    block_sizes = config.k if k is None else parse_suite_k(as_list(k), at.key("k"))
    dataset = config.dataset
    if slices is not None:
        dataset = dataclasses.replace(dataset, slices=parse_slices(as_list(slices), at.key("dataset").key("slices")))
    sizes = config.batch_size if batch_size is None else check_int_tuple(
        as_list(batch_size), at.key("batch_size"), 1, MAX_BATCH_SIZE, "--specperf-batch=1,8")
    return dataclasses.replace(config, drafts=chosen, k=block_sizes, dataset=dataset, batch_size=sizes)
