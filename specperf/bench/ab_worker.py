"""One side of an in-session A/B comparison: a process that loads a checkout's suite once and runs rounds on command.

Run as a script file, never imported from the package it measures::

    python PATH/TO/specperf/bench/ab_worker.py --root CHECKOUT --config SUITE.yaml [narrowing options]

It puts CHECKOUT first on ``sys.path`` and imports *that* checkout's specperf, engine, models and user code, so the
same file (this checkout's) drives a side that lacks it, such as a main branch from before the A/B existed. What a
side's specperf must provide (specperf 0.1 from its first vLLM release on does): ``specperf.config.load_config``,
``narrow``, ``specperf.config.cases.build_cases``, ``specperf.bench.suite.SuiteBench(config, interventions)`` whose
``runner`` has ``pass_fn(case)`` and ``baseline_pass_fn(case)``, ``specperf.records.pass_wall`` and the dataclass
``specperf.records.DecodeResult``.

Protocol version 1: JSON lines. The worker writes one object per line to stdout; the coordinator writes one request
per line to stdin; logs go to stderr. After start-up the worker says::

    {"type": "hello", "protocol": 1, "specperf": VERSION, "root": ROOT, "cases": [CASE_ID, ...],
     "config_hash": HASH, "environment": {...}, "device": "cpu" | "cuda:0" | ..., "threads": N}

(``device`` is where the side's models run and ``threads`` torch's intra-op threads, which the coordinator needs to
choose the grain: :func:`specperf.bench.ab_session.choose_grain`.)

and then answers each request in order:

- ``{"op": "warmup", "case": ID}``: one untimed paired round -> ``{"type": "ok"}``
- ``{"op": "round", "case": ID}``: the case's verifier-only pass, then its speculative pass ->
  ``{"type": "round", "case": ID, "baseline": [RESULT, ...], "spec": [RESULT, ...], "baseline_s": S, "spec_s": S}``
  where each RESULT is a ``DecodeResult`` as a dict and the walls are the passes' (the sum of their batches' walls)
- ``{"op": "quit"}``: exits 0.

A request that fails is answered ``{"type": "error", "message": ..., "traceback": ...}`` and the worker goes on. New
fields may be added to answers within a version; a change that breaks a reader raises the version.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

PROTOCOL = 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one side of specperf's in-session A/B comparison")
    parser.add_argument("--root", type=Path, required=True, help="the side's checkout (its specperf is imported)")
    parser.add_argument("--config", type=Path, required=True, help="the side's suite YAML")
    parser.add_argument("--drafts", default=None, help="comma-separated draft names to keep")
    parser.add_argument("--k", default=None, help="comma-separated block sizes to keep")
    parser.add_argument("--slices", default=None, help="comma-separated slices to keep")
    parser.add_argument("--batch", default=None, help="comma-separated batch sizes to keep")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--interventions", default=None, metavar="MODULE",
                        help="a test-only plugin module whose pytest_specperf_interventions hook to apply")
    return parser.parse_args(argv)


def _items(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _suite(args: argparse.Namespace) -> Any:
    """The side's suite, narrowed as the coordinator's command line narrowed its own."""
    from specperf.config import load_config, narrow

    suite = load_config(args.config)

    def ints(text: str | None) -> list[int] | None:
        return None if text is None else [int(t) for t in _items(text) or []]

    suite = narrow(suite, _items(args.drafts), ints(args.k), _items(args.slices), ints(args.batch))
    changes: dict[str, Any] = {}
    if args.device:
        changes["device"] = args.device
    if args.dtype:
        changes["dtype"] = args.dtype
    if args.max_new_tokens is not None:
        changes["generation"] = dataclasses.replace(suite.generation, max_new_tokens=args.max_new_tokens)
    return dataclasses.replace(suite, **changes)


def _interventions(module: str | None) -> Any:
    if module is None:
        return None
    hook = getattr(importlib.import_module(module), "pytest_specperf_interventions", None)
    return hook(config=None) if hook is not None else None


class Side:
    """The side's suite bench and its cases, built once; rounds run on command."""

    def __init__(self, args: argparse.Namespace) -> None:
        from specperf.bench.suite import SuiteBench
        from specperf.config.cases import build_cases

        self.suite = _suite(args)
        self.bench = SuiteBench(self.suite, _interventions(args.interventions))
        drafts, baselines = build_cases(self.suite)
        self.cases = {case.id: case for case in [*baselines, *drafts]}
        self._passes: dict[str, tuple[Callable[[], list[Any]], Callable[[], list[Any]]]] = {}

    def hello(self, root: Path) -> dict[str, Any]:
        import specperf
        from specperf.config import config_hash

        environment: dict[str, Any] = {}
        try:
            from specperf.bench.environment import environment_info

            environment = environment_info(self.suite)
        except Exception as exc:  # an older side may lack it or need more; the A/B only reports it
            environment = {"error": f"{type(exc).__name__}: {exc}"}
        return {"type": "hello", "protocol": PROTOCOL, "specperf": getattr(specperf, "__version__", None),
                "root": str(root), "cases": sorted(self.cases), "config_hash": config_hash(self.suite),
                "environment": environment, "device": self._device(), "threads": _torch_threads()}

    def _device(self) -> str:
        """Where the side's models run: its model store's resolved device (``auto`` already decided)."""
        store = getattr(self.bench.runner, "store", None)
        device = getattr(store, "device", None)
        return str(device) if device is not None else str(self.suite.device)

    def passes(self, case_id: str) -> tuple[Callable[[], list[Any]], Callable[[], list[Any]]]:
        """(verifier-only pass, speculative pass) of a draft case, built once."""
        if case_id not in self.cases:
            raise KeyError(f"no case {case_id!r} in this side's suite")
        if case_id not in self._passes:
            case, runner = self.cases[case_id], self.bench.runner
            if case.draft is None:
                raise ValueError(f"{case_id} is a verifier-only baseline: the A/B pairs draft cases")
            self._passes[case_id] = (runner.baseline_pass_fn(case), runner.pass_fn(case))
        return self._passes[case_id]

    def round(self, case_id: str) -> dict[str, Any]:
        from specperf.records import pass_wall

        baseline_pass, spec_pass = self.passes(case_id)
        size = self.cases[case_id].batch_size
        baseline, spec = baseline_pass(), spec_pass()
        return {"type": "round", "case": case_id, "baseline": [dataclasses.asdict(r) for r in baseline],
                "spec": [dataclasses.asdict(r) for r in spec], "baseline_s": pass_wall(baseline, size),
                "spec_s": pass_wall(spec, size)}

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "round":
            return self.round(str(request["case"]))
        if op == "warmup":
            self.round(str(request["case"]))
            return {"type": "ok"}
        raise ValueError(f"unknown op {op!r}; this worker speaks protocol {PROTOCOL}: warmup, round, quit")


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except Exception:  # a side without torch (an engine of its own) reports none
        return None


def _send(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def serve(side: Side, root: Path, stdin: TextIO, stdout: TextIO) -> int:
    """Answer requests until ``quit`` or the end of stdin (the coordinator died: exit too)."""
    _send(stdout, side.hello(root))
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request.get("op") == "quit":
                return 0
            _send(stdout, side.answer(request))
        except Exception as exc:
            _send(stdout, {"type": "error", "message": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()[-4000:]})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    root = args.root.resolve()
    # This file's folder is sys.path[0] when run as a script: drop it, so that `import specperf` (and its modules'
    # sibling names) come from the side's checkout only.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    sys.path.insert(0, str(root))
    stdout = sys.stdout
    sys.stdout = sys.stderr  # a stray print in the side's code must not corrupt the protocol
    try:
        side = Side(args)
    except Exception as exc:
        _send(stdout, {"type": "error", "message": f"start-up failed: {type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()[-4000:]})
        return 2
    return serve(side, root, sys.stdin, stdout)


if __name__ == "__main__":
    raise SystemExit(main())
