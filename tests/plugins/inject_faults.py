"""Injected regressions, for measuring the gates (tools/gate_quality.py, tools/ab_study.py and the tests) and
nothing else: a test-only pytest plugin.

Load it with ``-p tests.plugins.inject_faults``, the repository root on the Python path (``python -m pytest`` from
the root puts it there; tools/gate_quality.py and tools/ab_study.py set ``PYTHONPATH``); specperf itself never
imports it, so a normal run cannot even parse the switches. It implements ``pytest_specperf_interventions`` from the
environment variable ``SPECPERF_INJECT``, comma-separated ``name=value`` pairs, for example
``SPECPERF_INJECT=corrupt_every=20`` or ``SPECPERF_INJECT=spec_slowdown=0.15``. Unset, every hook is the identity.
A run with faults injected says so in the log and in every case's ``extra_info``
(``injected_faults``), so its JSON can never pass for an honest one.

- ``corrupt_every=N``: about one proposal in N (those that start at a sequence length divisible by N) has its
  first token replaced by another one, so that block accepts nothing: a worse drafter, as the audit and the
  deterministic gates see it. Keyed by position, not by a counter, so the audit's replay spoils the same blocks.
- ``spec_slowdown=F``: after each speculative request (or batch) the runner sleeps F times its wall time, and
  the request's wall time includes the sleep: the speculative path really is F slower, pytest-benchmark's timer
  included.
- ``baseline_speedup=F``: the verifier-only requests report (1 - F) times their measured wall time. Code cannot be
  made faster on demand, so this one is simulated at the clock; it lowers every speedup by the factor (1 - F).

In an in-session A/B (``--specperf-ab``), ``SPECPERF_INJECT_SIDE=B`` (or ``A``) injects the faults into that side's
worker only (``pytest_specperf_ab_side``): the other side stays honest. That worker imports this module as
``tests.plugins.inject_faults`` from the side's own checkout (the worker puts it first on ``sys.path``), so the
faults wrap that checkout's specperf.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from specperf.bench.interventions import GroupFn, Interventions
from specperf.config.cases import Case
from specperf.engine.drafters.base import Drafter, Proposal
from specperf.errors import ConfigError
from specperf.records import DecodeResult

log = logging.getLogger(__name__)

ENV_VAR = "SPECPERF_INJECT"
SIDE_VAR = "SPECPERF_INJECT_SIDE"
MODULE = "tests.plugins.inject_faults"  # this plugin, as `-p` and an A/B worker import it
PLUGIN_FILE = Path(*MODULE.split(".")).with_suffix(".py")  # this file, relative to a checkout


@dataclass(frozen=True)
class Faults(Interventions):
    """Which regressions to inject; the defaults inject none."""

    corrupt_every: int = 0  # corrupt about one proposal in N (0 = never)
    spec_slowdown: float = 0.0  # extra sleep per speculative request, as a fraction of its wall time
    baseline_speedup: float = 0.0  # fraction taken off each verifier-only request's reported wall time

    @property
    def active(self) -> bool:
        return self != Faults()

    @property
    def replays_drafter(self) -> bool:  # type: ignore[override]
        """Corrupted proposals are the drafter's, not the model's: the audit replays the wrapped drafter."""
        return bool(self.corrupt_every)

    def wrap_drafter(self, drafter: Drafter, vocab: int) -> Drafter:
        return CorruptingDrafter(drafter, self.corrupt_every, vocab) if self.corrupt_every else drafter

    def wrap_decode(self, case: Case, fn: GroupFn) -> GroupFn:
        if case.draft is None:
            return speed_up(fn, self.baseline_speedup)
        return slow_down(fn, self.spec_slowdown)

    def describe(self) -> str | None:
        """``name=value`` pairs of the injected faults, or None when there are none."""
        pairs = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name)]
        return ",".join(pairs) or None


def parse_faults(text: str) -> Faults:
    """Parse ``name=value[,name=value]``; an empty string injects nothing."""
    values: dict[str, float | int] = {}
    names = {f.name: f.type for f in fields(Faults)}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in names:
            raise ConfigError(f"{ENV_VAR}: unknown fault {name!r}; known: {', '.join(names)}")
        try:
            values[name] = int(value) if name == "corrupt_every" else float(value)
        except ValueError:
            raise ConfigError(f"{ENV_VAR}: {name} needs a number, got {value!r}") from None
    faults = replace(Faults(), **values)
    if faults.corrupt_every < 0 or not (faults.spec_slowdown >= 0 and 0 <= faults.baseline_speedup < 1):
        raise ConfigError(f"{ENV_VAR}: corrupt_every >= 0, spec_slowdown >= 0 and 0 <= baseline_speedup < 1, "
                          f"got {text!r}")
    return faults


def from_env() -> Faults:
    faults = parse_faults(os.environ.get(ENV_VAR, ""))
    if faults.active:
        log.warning("specperf: injecting regressions (%s=%s): these results measure the gates, not the code",
                    ENV_VAR, faults.describe())
    return faults


class CorruptingDrafter(Drafter):
    """Wraps a drafter and spoils the first token of the proposals made at a sequence length divisible by ``every``.

    Proposals start about every 1 + accepted-length positions, so roughly one in ``every`` is spoiled.
    """

    def __init__(self, inner: Drafter, every: int, vocab: int) -> None:
        self.inner, self.every, self.vocab = inner, every, vocab
        self.name, self.provides_probs, self.uses_model = inner.name, inner.provides_probs, inner.uses_model

    def start(self, prompt_len: int, *, device: torch.device, temperature: float,
              generator: torch.Generator | None) -> None:
        self.inner.start(prompt_len, device=device, temperature=temperature, generator=generator)

    def propose(self, seq: list[int], pending: torch.Tensor, k: int) -> Proposal:
        proposal = self.inner.propose(seq, pending, k)
        if len(seq) % self.every or not len(proposal):
            return proposal
        tokens = proposal.tokens.clone()  # (k',)
        tokens[0] = (tokens[0] + 1) % self.vocab
        # q no longer describes the spoiled token; sampling then treats the block's q as one-hot.
        return replace(proposal, tokens=tokens, probs=None)

    def rollback(self, n_valid: int) -> None:
        self.inner.rollback(n_valid)

    def vocab_size(self) -> int | None:
        return self.inner.vocab_size()

    def describe(self) -> str:
        return self.inner.describe()


def slow_down(fn: GroupFn, fraction: float) -> GroupFn:
    """After each group of requests, sleep ``fraction`` of its wall time, and count the sleep in every request's."""
    if not fraction:
        return fn

    def slowed(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
        results = fn(i, prompts)
        start = time.perf_counter()
        time.sleep(fraction * max(r.wall_s for r in results))
        slept = time.perf_counter() - start
        for result in results:
            result.wall_s += slept
        return results

    return slowed


def speed_up(fn: GroupFn, fraction: float) -> GroupFn:
    """Report ``1 - fraction`` of each request's measured wall time (and time to first token)."""
    if not fraction:
        return fn

    def faster(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
        results = fn(i, prompts)
        for result in results:
            result.wall_s *= 1 - fraction
            result.ttft_s *= 1 - fraction
        return results

    return faster


@pytest.hookimpl
def pytest_specperf_interventions(config: pytest.Config) -> Faults | None:
    """The faults SPECPERF_INJECT names; None (specperf's identity) when it names none."""
    try:
        faults = from_env()
    except ConfigError as exc:
        raise pytest.UsageError(f"inject_faults: {exc}") from None
    return faults if faults.active else None


@pytest.hookimpl
def pytest_specperf_ab_side(config: pytest.Config, side: Any) -> Any:
    """The A/B side that SPECPERF_INJECT_SIDE names loads this plugin's faults in its worker; None for the other."""
    if os.environ.get(SIDE_VAR) != side.label:
        return None
    if not (Path(side.root) / PLUGIN_FILE).is_file():
        raise pytest.UsageError(f"inject_faults: side {side.label}'s checkout {side.root} has no {PLUGIN_FILE}; fix: "
                                f"inject into a side whose checkout has it ({SIDE_VAR})")
    # The worker puts the side's checkout first on sys.path: `tests` there is that checkout's folder.
    return replace(side, interventions=MODULE, pythonpath=(str(side.root),))
