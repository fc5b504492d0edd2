"""Hooks specperf adds to pytest. Implement them in a conftest.py to ship metrics elsewhere."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_specperf_record(config: pytest.Config, case: Any, metrics: dict[str, Any], extra_info: dict[str, Any]) -> None:
    """Called once per benchmark case with its audited metrics, after its timed rounds.

    ``case`` is a :class:`specperf.suite.Case` (``case.id`` is the stable benchmark id), ``metrics`` the dict of
    documented keys, ``extra_info`` the pytest-benchmark dict that lands in ``--benchmark-json``. specperf's own
    implementation (which runs last) copies ``metrics`` into ``extra_info``. Every implementation is called.
    """
