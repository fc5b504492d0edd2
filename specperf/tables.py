"""The seed's two tables (performance per draft, acceptance per draft) from recorded case metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)]


def performance_table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per case: model, latency p50/p95 (s/token), throughput p50/p95 (tok/s), speedup (x)."""
    header = ["case", "model", "latency p50 (s/tok)", "latency p95 (s/tok)", "throughput p50 (tok/s)",
              "throughput p95 (tok/s)", "speedup (x)"]
    rows = []
    for case_id, m in results.items():
        model = m.get("draft_model") or m.get("draft") or m.get("verifier")
        speedup = 1.0 if m.get("draft") is None else m.get("speedup")
        rows.append([case_id, str(model), _fmt(m.get("latency_p50"), ".5f"), _fmt(m.get("latency_p95"), ".5f"),
                     _fmt(m.get("throughput_p50"), ".1f"), _fmt(m.get("throughput_p95"), ".1f"),
                     _fmt(speedup, ".2f")])
    return _table(header, rows)


def acceptance_table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per draft case: samples, draft acceptance mean/p50/p95, and the per-token agreement (alpha)."""
    header = ["case", "samples", "acceptance mean", "acceptance p50", "acceptance p95", "agreement (alpha)",
              "tokens / verifier call"]
    rows = []
    for case_id, m in results.items():
        if m.get("draft") is None:
            continue
        rows.append([case_id, str(m.get("n_requests")), _fmt(m.get("acceptance_mean"), ".3f"),
                     _fmt(m.get("acceptance_p50"), ".3f"), _fmt(m.get("acceptance_p95"), ".3f"),
                     _fmt(m.get("alpha"), ".3f"), _fmt(m.get("mean_accepted_length"), ".2f")])
    return _table(header, rows)
