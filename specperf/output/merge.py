"""`specperf merge`: the shards of one suite run (``--specperf-shard I/N`` on a CI matrix) as one pytest-benchmark JSON.

The merged file is an ordinary ``--benchmark-json`` file: ``specperf compare``, ``specperf report``,
``--specperf-baseline`` and pytest-benchmark's own ``compare`` read it like a whole run. Shards that do not belong
together are refused: another suite (its config hash), another commit, another kind of machine; and so are duplicate
or missing cases, each named. A case that errored (its entry names it but holds no metric) is present, not missing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from specperf.errors import ConfigError
from specperf.output.benchfile import machine_kind, read_bench_document

_SHOW = 4  # case ids quoted in an error message


def _specperf_info(data: Mapping[str, Any], file: Path) -> Mapping[str, Any]:
    info = data.get("machine_info", {}).get("specperf")
    if not isinstance(info, Mapping) or "config_hash" not in info:
        raise ConfigError(f"shard {file} has no machine_info.specperf (config hash, suite cases); fix: merge files "
                          "written by `pytest perf/ --specperf-shard=I/N --benchmark-json=FILE`")
    return info


def machine_type(data: Mapping[str, Any]) -> dict[str, Any]:
    """What shards must share to be comparable (:func:`specperf.output.benchfile.machine_kind`): GPU, CPU model,
    architecture, and the torch, CUDA, cuDNN and transformers builds."""
    machine = data.get("machine_info")
    return machine_kind(machine if isinstance(machine, Mapping) else {})


def _same(values: Sequence[tuple[Path, Any]], what: str, fix: str) -> None:
    """A ConfigError naming each file's value when the shards disagree on ``what``."""
    if len({json.dumps(v, sort_keys=True, default=str) for _, v in values}) > 1:
        shown = "; ".join(f"{file}: {value}" for file, value in values)
        raise ConfigError(f"the shards come from different {what} ({shown}); fix: {fix}")


def _few(ids: Sequence[str]) -> str:
    return ", ".join(ids[:_SHOW]) + (f", ... ({len(ids)} in all)" if len(ids) > _SHOW else "")


def _check_cases(runs: Sequence[tuple[Path, Sequence[str]]], suite_cases: Sequence[str]) -> None:
    """Each case in one shard only, and every case of the suite in one (an errored case is present: its entry names
    it, and the readers of the merged file skip it)."""
    seen: dict[str, Path] = {}
    for file, cases in runs:
        for case_id in cases:
            if case_id in seen:
                raise ConfigError(f"case {case_id} is in two shards, {seen[case_id]} and {file}; fix: merge each "
                                  "shard once (the same --specperf-shard=I/N twice?)")
            seen[case_id] = file
    missing = [case_id for case_id in suite_cases if case_id not in seen]
    if missing:
        raise ConfigError(f"the shards lack {len(missing)} of the suite's {len(suite_cases)} cases ({_few(missing)}); "
                          "fix: merge every shard's file, 1/N to N/N")


def merge_runs(paths: Sequence[Path]) -> dict[str, Any]:
    """One pytest-benchmark JSON document holding every shard's benchmarks; ConfigError when they do not fit."""
    if len(paths) < 2:
        raise ConfigError("merge needs at least two shard files; fix: pass every shard's --benchmark-json file")
    read = [(Path(p), *read_bench_document(p, role="shard")) for p in paths]  # each file read and validated once
    runs = [(file, [*run.cases, *run.errored]) for file, _, run in read]
    documents = [(file, data) for file, data, _ in read]
    infos = [(file, _specperf_info(data, file)) for file, data in documents]
    _same([(f, i["config_hash"]) for f, i in infos], "suites (config hashes)",
          "merge shards of one suite run, with the same options")
    _same([(f, d.get("commit_info", {}).get("id")) for f, d in documents], "commits", "merge shards of one commit")
    _same([(f, machine_type(d)) for f, d in documents], "kinds of machine",
          "run every shard on the same kind of runner")
    _check_cases(runs, list(infos[0][1].get("suite_cases") or []))
    merged: dict[str, Any] = copy.deepcopy(documents[0][1])
    merged["benchmarks"] = [bench for _, data in documents for bench in data["benchmarks"]]
    merged["machine_info"]["specperf"]["shard"] = f"merged from {len(documents)} shards"
    return merged
