"""The plugin's side of an in-session A/B (``--specperf-ab=PATH``): both sides' workers, each draft case decided
round by round, B's metrics into this session's ``--benchmark-json``, A's into a JSON of its own, and the A/B report.

Torch-free: the models live in the workers (:mod:`specperf.bench.ab_session`). Untimed work (the audit, the greedy
replay, the time breakdown, the step-cost probes) does not run in A/B mode: the exact comparison of both sides'
greedy work is the deterministic check, and each side's timing figures come from its own rounds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from specperf.analysis.ab import AbPlan, AbResult, WorkDifference, failure_message
from specperf.analysis.extract import case_metrics
from specperf.config import SuiteConfig
from specperf.config.cases import Case
from specperf.errors import SpecperfError
from specperf.pytest_plugin.options import Options
from specperf.records import CaseRecord, DecodeResult, RunContext, first_divergence

if TYPE_CHECKING:
    from specperf.bench.ab_session import AbRunner, CaseAb, Grain, SideSpec

log = logging.getLogger(__name__)
CHECKOUT = Path(__file__).resolve().parents[2]  # this side's (B's) checkout: where this specperf was imported from


class AbRegression(SpecperfError):
    """Side B is slower than side A beyond min_effect (DIFFERENT), or their greedy work differs."""


def _run_settings(options: Options) -> list[str]:
    """The worker options for this session's device, dtype and token count (when the command line set them)."""
    args: list[str] = []
    for flag, value in (("--device", options.device), ("--dtype", options.dtype),
                        ("--max-new-tokens", options.max_new_tokens)):
        if value is not None:
            args += [flag, str(value)]
    return args


def _narrowing(options: Options) -> tuple[str, ...]:
    """The worker options that narrow a side's suite as this session's command line narrowed its own."""
    args: list[str] = []
    for flag, values in (("--drafts", options.drafts), ("--k", options.k), ("--slices", options.slices),
                         ("--batch", options.batch_size)):
        if values:
            args += [flag, ",".join(map(str, values))]
    return (*args, *_run_settings(options))


def case_narrowing(case: Case, options: Options) -> tuple[str, ...]:
    """The worker options that select just ``case`` (the case grain's fresh workers), with the session's device,
    dtype and token count."""
    assert case.draft is not None
    args = ["--drafts", case.draft.name, "--k", str(case.k), "--slices", case.slice, "--batch", str(case.batch_size)]
    return (*args, *_run_settings(options))


def a_config(options: Options) -> Path:
    """Side A's suite: the option's, else this run's suite at the same place in A's checkout, else this run's."""
    assert options.ab_root is not None
    if options.ab_config is not None:
        return options.ab_config.resolve()
    mine = options.config_path.resolve()
    try:
        theirs = options.ab_root / mine.relative_to(CHECKOUT)
    except ValueError:
        return mine
    return theirs if theirs.is_file() else mine


def sides(options: Options, pytest_config: pytest.Config) -> tuple[SideSpec, SideSpec]:
    """Side A (the reference, at --specperf-ab) and side B (this checkout and interpreter)."""
    from specperf.bench.ab_session import SideSpec

    assert options.ab_root is not None
    narrowing = _narrowing(options)
    a = SideSpec("A", options.ab_root, options.ab_python or sys.executable, a_config(options), narrowing)
    b = SideSpec("B", CHECKOUT, sys.executable, options.config_path.resolve(), narrowing)
    hook = pytest_config.hook.pytest_specperf_ab_side
    return hook(config=pytest_config, side=a) or a, hook(config=pytest_config, side=b) or b


def _result(data: dict[str, Any]) -> DecodeResult:
    return DecodeResult(**data)


def side_record(case: Case, suite: SuiteConfig, rounds: list[dict[str, Any]], label: str) -> CaseRecord:
    """A side's rounds of a case as the record its metrics come from (no audit, replay or step costs)."""
    assert case.draft is not None
    spec = [[_result(r) for r in answer["spec"]] for answer in rounds]
    base = [[_result(r) for r in answer["baseline"]] for answer in rounds]
    divergence = [first_divergence(b.tokens, s.tokens) for b, s in zip(base[-1], spec[-1])]
    return CaseRecord(
        case_id=case.id, slice=case.slice, k=case.k, batch_size=case.batch_size, draft=case.draft.name,
        draft_model=case.draft.model, drafter=case.draft.drafter, engine=case.draft.engine,
        context=RunContext(suite.verifier, suite.device, suite.dtype, suite.generation.temperature,
                           f"A/B side {label}"),
        rounds=spec, baseline_rounds=base, first_divergence=divergence,
        divergence_margins=[None] * len(divergence), divergence_magnitudes=[None] * len(divergence),
    )


def ab_plan(options: Options, n_cases: int) -> AbPlan:
    """The session's A/B design: two tests (wall, speedup) per draft case of the whole suite, looked at after 12
    pairs (more when the session's confidence needs more to decide at all), then every 6, up to the cap."""
    problem = ""
    for first in range(min(12, options.ab_max_pairs), options.ab_max_pairs + 1):
        try:
            return AbPlan(n_tests=2 * max(1, n_cases), alpha=options.ab_alpha, first_pairs=first,
                          max_pairs=options.ab_max_pairs, min_effect=options.ab_min_effect)
        except ValueError as exc:
            problem = str(exc)
    raise SpecperfError(f"--specperf-ab-max-pairs {options.ab_max_pairs} at --specperf-ab-alpha "
                        f"{options.ab_alpha}: {problem}; fix: allow more pairs or a larger alpha")


def raw_rounds(ab: CaseAb) -> dict[str, Any]:
    """One case's pairs as run: each side's speculative and verifier-only pass walls (s), pair i of A beside pair i
    of B, the CPUs each ran on (duet), and the final decision."""
    def side(rounds: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return {"spec_s": [r["spec_s"] for r in rounds], "baseline_s": [r["baseline_s"] for r in rounds],
                "cpus": [r.get("cpus") for r in rounds]}

    return {"case_id": ab.case_id, "A": side(ab.a_rounds), "B": side(ab.b_rounds), "final": ab.step.done,
            "decisions": {r.metric: r.decision for r in ab.step.results}}


def ab_info(ab: CaseAb) -> dict[str, Any]:
    """The case's A/B figures, as recorded in both sides' extra_info under ``ab``."""
    return {"pairs": ab.step.results[0].n_rounds if ab.step.results else 0, "final": ab.step.done,
            "results": [dataclasses.asdict(r) for r in ab.step.results],
            "work_compared": ab.compared_work, "work_differences": [w.message() for w in ab.work]}


class AbSession:
    """Started on the first draft case; closed at session end."""

    def __init__(self, options: Options, pytest_config: pytest.Config, suite: SuiteConfig,
                 draft_case_ids: list[str]) -> None:
        self.options, self.pytest_config, self.suite = options, pytest_config, suite
        self.case_ids = draft_case_ids
        self.plan = ab_plan(options, len(draft_case_ids))
        self.results: list[AbResult] = []
        self.work: list[WorkDifference] = []
        self.a_infos: list[dict[str, Any]] = []
        self.raw: list[dict[str, Any]] = []
        self._runner: AbRunner | None = None
        self.grain: Grain | None = None  # known once the workers said hello
        self.a_environment: dict[str, Any] = {}

    @property
    def runner(self) -> AbRunner:
        if self._runner is None:
            from specperf.bench.ab_session import AbRunner

            a, b = sides(self.options, self.pytest_config)
            allow_duet = all(d.engine not in ("vllm", "server") for d in self.suite.drafts)
            self._runner = AbRunner(a, b, self.case_ids, self.options.ab_out, grain=self.options.ab_grain,
                                    allow_duet=allow_duet)
            self.a_environment = self._runner.hellos["A"].get("environment", {})
            self.grain = self._runner.grain
        return self._runner

    def run_case(self, case: Case, benchmark: Any) -> tuple[dict[str, Any], list[str]]:
        """B's metrics of one draft case (A's are kept for A's JSON), and the failure messages, empty if none."""
        runner = self.runner
        ab = runner.run_case(case.id, self.plan, warmup_rounds=self.suite.timing.warmup_rounds,
                             case_narrowing=case_narrowing(case, self.options),
                             rounds_per_run=self.suite.timing.rounds)
        # Plain dicts: each side's DraftMetrics, and the A/B's own "ab" key.
        b_values: dict[str, Any] = dict(case_metrics(side_record(case, self.suite, ab.b_rounds, "B")))
        a_values: dict[str, Any] = dict(case_metrics(side_record(case, self.suite, ab.a_rounds, "A")))
        info = ab_info(ab)
        b_values["ab"] = a_values["ab"] = info
        a_values["case_id"] = case.id
        self.a_infos.append(a_values)
        self.results.extend(ab.step.results)
        self.raw.append(raw_rounds(ab))
        self.work.extend(ab.work)
        _set_stats(benchmark, [r["spec_s"] for r in ab.b_rounds])
        failures = [failure_message(r) for r in ab.step.results if r.failed] + [w.message() for w in ab.work]
        return b_values, failures

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def write(self) -> Path | None:
        """Side A's JSON and the A/B report into --specperf-ab-out; None when no case ran."""
        if not self.results or self.grain is None:
            return None
        from specperf.output.ab_report import write_ab_report
        from specperf.output.files import atomic_write

        out = self.options.ab_out
        out.mkdir(parents=True, exist_ok=True)
        document = {"machine_info": {"specperf": self.a_environment},
                    "commit_info": {}, "version": _benchmark_version(),
                    "benchmarks": [{"name": f"A/{i['case_id']}", "extra_info": i} for i in self.a_infos]}
        atomic_write(out / "A.json", json.dumps(document, indent=2, default=str) + "\n")
        grain = self.grain
        atomic_write(out / "pairs.json", json.dumps(self.pairs_document(grain), indent=2) + "\n")
        return write_ab_report(self.results, self.work, out, a_label=str(self.options.ab_root),
                               b_label=str(CHECKOUT), grain=grain.name, min_effect=self.plan.min_effect,
                               notes=[f"grain: {grain.reason}",
                                      f"confidence per interval {self.plan.confidence:.5f} (Bonferroni over "
                                      f"{self.plan.n_tests} case-metrics x {self.plan.looks} looks)"])

    def pairs_document(self, grain: Grain) -> dict[str, Any]:
        """Every case's paired round walls as run (``pairs.json``): what ``tools/ab_study.py --analyze`` replays."""
        plan = dataclasses.asdict(self.plan)
        return {"format": 1, "grain": grain.name, "grain_reason": grain.reason, "plan": plan,
                "look_sizes": list(self.plan.look_sizes), "confidence": self.plan.confidence, "cases": self.raw}


def _benchmark_version() -> str:
    import pytest_benchmark

    return str(pytest_benchmark.__version__)


def _set_stats(benchmark: Any, walls: list[float]) -> None:
    """pytest-benchmark's statistics of this case: side B's speculative round walls, as its worker timed them."""
    if benchmark.disabled or not walls:
        return
    stats = _new_stats(benchmark)
    for wall in walls:
        stats.update(wall)


def _new_stats(benchmark: Any) -> Any:
    """A fresh statistics object of ``benchmark`` (one iteration per round), registered with the benchmark session so
    that it lands in ``--benchmark-json``: what the fixture's own timing would have made.

    The one place specperf calls pytest-benchmark's private API (``BenchmarkFixture._make_stats``): there is no public
    way to hand the fixture rounds timed elsewhere (here, by side B's worker). pyproject pins pytest-benchmark to 5.x,
    whose ``_make_stats(iterations)`` builds the ``Metadata``, adds it to the session and sets ``benchmark.stats``; a
    release that renames it or changes its arguments makes an A/B run fail at this call.
    """
    return benchmark._make_stats(1)
