"""The benchmark suite: `pytest perf/ --benchmark-json=out.json`.

Cases come from the suite YAML (perf/specperf.yaml by default): one verifier-only baseline per dataset slice, and
one case per (draft, k, slice). All of the work lives in specperf; these two tests are what a user copies.
"""

from __future__ import annotations


def test_baseline(specperf, specperf_baseline_case, benchmark):
    specperf.run_baseline(specperf_baseline_case, benchmark)


def test_speculative(specperf, specperf_case, benchmark):
    specperf.run_case(specperf_case, benchmark)
