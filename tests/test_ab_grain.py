"""The A/B's grain: duet (both sides at once, each on its own CPUs) only where it can run, else alternate."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from specperf.bench.ab_session import choose_grain
from specperf.errors import ConfigError


def hello(device: str = "cpu", threads: int | None = 1) -> dict[str, Any]:
    return {"type": "hello", "device": device, "threads": threads}


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU pinning is Linux-only")


@linux_only
def test_auto_runs_duet_on_cpu_with_room_for_both_sides() -> None:
    grain = choose_grain("auto", [hello(), hello()], cpus=[0, 1])
    assert grain.name == "duet"
    assert grain.cpus == ((0,), (1,))


@linux_only
def test_duet_gives_each_side_its_thread_count_of_cpus() -> None:
    grain = choose_grain("auto", [hello(threads=2), hello(threads=2)], cpus=[0, 1, 2, 3, 4])
    assert grain.cpus == ((0, 1), (2, 3))


@pytest.mark.parametrize(("hellos", "allow", "cpus", "why"), [
    ([hello("cuda:0"), hello("cuda:0")], True, [0, 1, 2, 3], "runs on cuda:0"),
    ([hello(threads=2), hello(threads=2)], True, [0, 1, 2], "need 2 CPU(s) each and this process may use 3"),
    ([hello(threads=None), hello()], True, [0, 1], "thread count is unknown"),
    ([hello(), hello()], False, [0, 1], "vLLM"),
])
def test_auto_falls_back_to_alternate_and_says_why(hellos: list[dict[str, Any]], allow: bool, cpus: list[int],
                                                   why: str) -> None:
    grain = choose_grain("auto", hellos, allow_duet=allow, cpus=cpus)
    assert grain.name == "alternate"
    if sys.platform.startswith("linux"):
        assert why in grain.reason


def test_duet_asked_for_where_it_cannot_run_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"--specperf-ab-grain duet cannot run: .*fix: --specperf-ab-grain alternate"):
        choose_grain("duet", [hello("cuda:0"), hello("cuda:0")], cpus=[0, 1])


def test_alternate_when_asked_and_an_unknown_grain_is_refused() -> None:
    assert choose_grain("alternate", [hello(), hello()], cpus=[0, 1]).name == "alternate"
    with pytest.raises(ConfigError, match="grain 'sideways' is unknown"):
        choose_grain("sideways", [hello(), hello()], cpus=[0, 1])
