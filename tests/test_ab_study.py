"""tools/ab_study.py --analyze: the A/A, power and injected tables rebuilt from saved sessions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from specperf.analysis.ab import AbPlan
from tools import ab_study

PLAN = AbPlan(n_tests=2, alpha=0.05, first_pairs=12, block_pairs=6, max_pairs=30, min_effect=0.02)


def case(rng: np.random.Generator, case_id: str, noise: float, pairs: int = 30, b_scale: float = 1.0,
         decisions: tuple[str, str] = ("SAME", "SAME")) -> dict[str, object]:
    def walls(scale: float) -> list[float]:
        return list(scale * np.exp(rng.normal(0.0, noise, pairs)))

    return {"case_id": case_id, "final": True, "decisions": dict(zip(("wall", "speedup"), decisions)),
            "A": {"spec_s": walls(0.5), "baseline_s": walls(0.8), "cpus": [None] * pairs},
            "B": {"spec_s": walls(0.5 * b_scale), "baseline_s": walls(0.8), "cpus": [None] * pairs}}


def save(root: Path, name: str, kind: str, cases: list[dict[str, object]], inject: str = "") -> None:
    folder = root / "sessions" / name
    folder.mkdir(parents=True)
    (folder / "session.json").write_text(json.dumps({"kind": kind, "inject": inject, "wall_s": 300.0, "rc": 0,
                                                     "cpu": "test CPU", "date": "2026-12-02"}))
    if kind != "default":
        pairs = {"format": 1, "grain": "duet", "grain_reason": "test", "plan": dataclasses.asdict(PLAN),
                 "look_sizes": list(PLAN.look_sizes), "confidence": PLAN.confidence, "cases": cases}
        (folder / "pairs.json").write_text(json.dumps(pairs))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(3):  # quiet and noisy cases of unchanged code
        save(tmp_path, f"{i:02d}-aa", "aa", [case(rng, "quiet", 0.002), case(rng, "noisy", 0.2,
                                                                              decisions=("UNKNOWN", "UNKNOWN"))])
    save(tmp_path, "03-slowed", "slowed", [case(rng, "quiet", 0.002, b_scale=1.05,
                                                decisions=("DIFFERENT", "DIFFERENT"))], inject="spec_slowdown=0.05")
    save(tmp_path, "04-default", "default", [])
    return tmp_path


def test_replay_of_an_unscaled_quiet_case_settles_and_a_scaled_one_fails() -> None:
    rng = np.random.default_rng(1)
    quiet = case(rng, "quiet", 0.002)
    assert ab_study.replay(quiet, PLAN) == ("settled", False)
    assert ab_study.replay(quiet, PLAN, 0.05) == ("failed", False)


def test_a_replay_that_needs_pairs_the_session_never_ran_is_short() -> None:
    rng = np.random.default_rng(2)
    stopped = case(rng, "stopped", 0.03, pairs=12)  # stopped at the first look; a scaled replay wants more
    outcome, short = ab_study.replay(stopped, PLAN, 0.03)
    assert (outcome, short) == ("unknown", True)


def test_analyze_rebuilds_every_table(study: Path) -> None:
    report = ab_study.analyze(study)
    assert "3 A/A sessions, 1 slowed, 0 corrupt, 1 default runs" in report
    assert "0 DIFFERENT decisions in all." in report
    assert "| quiet | 3 | 0 | 6 | 0 | 30 |" in report  # 3 sessions x 2 metrics SAME
    power = report.split("## Power")[1].split("##")[0]
    assert "| quiet | 3/3 | 3/3 | 3/3 |" in power
    assert "| noisy | 0/3 | 0/3 |" in power
    assert "DIFFERENT / DIFFERENT" in report.split("## Slowed")[1]
    assert "1.00x (budget 1.5x)" in report
