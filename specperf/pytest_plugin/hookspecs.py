"""Hooks specperf adds to pytest. Implement them in a conftest.py (or a plugin) to ship metrics elsewhere."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_specperf_record(config: pytest.Config, case: Any, metrics: dict[str, Any],
                           extra_info: dict[str, Any]) -> None:
    """Called once per benchmark case with its audited metrics, after its timed rounds.

    ``case`` is a :class:`specperf.config.cases.Case` (``case.id`` is the stable benchmark id), ``metrics`` the dict
    of documented keys, ``extra_info`` the pytest-benchmark dict that lands in ``--benchmark-json``. specperf's own
    implementation (which runs last) copies ``metrics`` into ``extra_info``. Every implementation is called.
    """


@pytest.hookspec(firstresult=True)
def pytest_specperf_interventions(config: pytest.Config) -> Any:
    """Return a :class:`specperf.bench.interventions.Interventions` to change what the suite run does, or None.

    For measuring the gates only (tests/plugins/inject_faults.py injects regressions through it); a normal run has no
    implementation and runs the identity. A run with interventions records their description in every case's
    ``injected_faults``. Called once, when the first case runs.
    """


@pytest.hookspec(firstresult=True)
def pytest_specperf_ab_side(config: pytest.Config, side: Any) -> Any:
    """Return a changed :class:`specperf.bench.ab_session.SideSpec` for one side of an in-session A/B, or None.

    For measuring the A/B gate only: a test-only plugin makes one side slower or corrupts its draft by naming its
    interventions module (``dataclasses.replace(side, interventions="inject_faults", pythonpath=(...,))``). Called
    once per side, A then B, before its worker starts.
    """
