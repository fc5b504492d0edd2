"""The report's tables from recorded case metrics (case id -> extra_info), as raw rows and as markdown.

Three tables of columns: performance per case (baseline rows included, speedup 1.0), acceptance per draft case, and
the analytic model per draft case. Each is a tuple of :class:`Column`; :func:`table_rows` gives the raw values (what
the CSV files hold, full precision) and :func:`markdown_table` the formatted lines (what summary.md, report.md and
the terminal show). A fourth, :func:`engine_table`, puts the engines that ran the same draft and k side by side.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Info = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """One table column: its title (with unit), how to read its value from a case, and its number format."""

    title: str
    value: Callable[[str, Info], Any]
    spec: str = ""


def _key(name: str) -> Callable[[str, Info], Any]:
    return lambda _case_id, info: info.get(name)


def is_draft_case(info: Info) -> bool:
    """A draft case names its draft; a verifier-only baseline has ``draft`` None."""
    return info.get("draft") is not None


def case_model(info: Info) -> str:
    """The model a case is about: the draft model, the drafter name (prompt lookup), or the verifier (baseline)."""
    return str(info.get("draft_model") or info.get("draft") or info.get("verifier"))


def case_speedup(info: Info) -> Any:
    """A baseline is its own reference: speedup 1.0 by definition."""
    return info.get("speedup") if is_draft_case(info) else 1.0


PERFORMANCE_COLUMNS: tuple[Column, ...] = (
    Column("case", lambda case_id, _info: case_id),
    Column("model", lambda _case_id, info: case_model(info)),
    Column("latency p50 (s/tok)", _key("latency_p50"), ".5f"),
    Column("latency p95 (s/tok)", _key("latency_p95"), ".5f"),
    Column("throughput p50 (tok/s)", _key("throughput_p50"), ".1f"),
    Column("throughput p95 (tok/s)", _key("throughput_p95"), ".1f"),
    Column("batch", lambda _case_id, info: info.get("batch_size", 1), "d"),
    Column("aggregate throughput (tok/s)", _key("throughput_aggregate"), ".1f"),
    Column("speedup (x)", lambda _case_id, info: case_speedup(info), ".2f"),
)
ACCEPTANCE_COLUMNS: tuple[Column, ...] = (
    Column("case", lambda case_id, _info: case_id),
    Column("samples", lambda _case_id, info: info.get("acceptance_samples", info.get("n_requests")), "d"),
    Column("sample slice", _key("acceptance_sample_slice")),
    Column("acceptance mean", _key("acceptance_mean"), ".3f"),
    Column("acceptance p50", _key("acceptance_p50"), ".3f"),
    Column("acceptance p95", _key("acceptance_p95"), ".3f"),
    Column("agreement (alpha)", _key("alpha"), ".3f"),
    Column("timed requests", _key("n_requests"), "d"),
    Column("engine acceptance (timed)", _key("acceptance_aggregate"), ".3f"),
    Column("tokens / verifier call", _key("mean_accepted_length"), ".2f"),
)
THEORY_COLUMNS: tuple[Column, ...] = (
    Column("case", lambda case_id, _info: case_id),
    Column("mean accepted length (tok/call)", _key("mean_accepted_length"), ".2f"),
    Column("expected speedup (x)", _key("expected_speedup"), ".2f"),
    Column("efficiency vs theory", _key("efficiency"), ".2f"),
    Column("loop overhead share", _key("time_other_share"), ".2f"),
    Column("bound (x)", _key("speedup_bound"), ".2f"),
    Column("efficiency vs bound", _key("bound_efficiency"), ".2f"),
    Column("best k (predicted)", _key("best_k"), "d"),
    Column("exact match rate", _key("exact_match_rate"), ".3f"),
    Column("TTFT p50 (s)", _key("ttft_p50"), ".4f"),
)


def table_rows(results: Mapping[str, Info], columns: Sequence[Column], *,
               drafts_only: bool = False) -> list[list[Any]]:
    """Raw cell values, one row per case in ``results`` order (draft cases only with ``drafts_only``)."""
    return [[col.value(case_id, info) for col in columns] for case_id, info in results.items()
            if not drafts_only or is_draft_case(info)]


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):  # a hand-edited JSON may hold a string where a number belongs
        return str(value)


def aligned_table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)]


def markdown_table(results: Mapping[str, Info], columns: Sequence[Column], *,
                   drafts_only: bool = False) -> list[str]:
    """The table as aligned markdown lines (header, rule, one line per case)."""
    raw = table_rows(results, columns, drafts_only=drafts_only)
    cells = [[_fmt(value, col.spec) for value, col in zip(row, columns)] for row in raw]
    # A pipe inside a cell (an odd hub id) would split the markdown column.
    cells = [[cell.replace("|", "\\|") for cell in row] for row in cells]
    return aligned_table([col.title for col in columns], cells)


def performance_table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per case: model, latency p50/p95 (s/token), throughput p50/p95 (tok/s), speedup (x)."""
    return markdown_table(results, PERFORMANCE_COLUMNS)


def acceptance_table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per draft case: samples, draft acceptance mean/p50/p95, and the per-token agreement (alpha)."""
    return markdown_table(results, ACCEPTANCE_COLUMNS, drafts_only=True)


ENGINE_ORDER = ("specperf", "vllm", "hf")


def engine_rows(results: Mapping[str, Info]) -> tuple[list[str], list[list[Any]]]:
    """The engines side by side: one row per (draft model or drafter, k, batch size, slice) that more than one
    engine ran, with each engine's aggregate throughput (tok/s) and speedup against its own verifier-only decoding.
    ([], []) when no draft ran on two engines."""
    groups: dict[tuple[str, Any, Any, Any], dict[str, Info]] = {}
    for info in results.values():
        if is_draft_case(info):
            what = str(info.get("draft_model") or info.get("drafter"))
            key = (what, info.get("k"), info.get("batch_size", 1), info.get("slice"))
            groups.setdefault(key, {})[str(info.get("engine", "specperf"))] = info
    shared = {key: by_engine for key, by_engine in groups.items() if len(by_engine) > 1}
    present = {engine for by_engine in shared.values() for engine in by_engine}
    engines = [e for e in ENGINE_ORDER if e in present] + sorted(present - set(ENGINE_ORDER))
    if not engines:
        return [], []
    header = ["model", "k", "batch", "slice"] + [title for e in engines
                                                  for title in (f"{e} tok/s", f"{e} speedup (x)")]
    rows = [[*key, *[value for e in engines for value in (
        by_engine[e].get("throughput_aggregate") if e in by_engine else None,
        by_engine[e].get("speedup") if e in by_engine else None)]] for key, by_engine in shared.items()]
    return header, rows


def engine_table(results: Mapping[str, Info]) -> list[str]:
    """:func:`engine_rows` as markdown lines; [] when no draft ran on two engines."""
    header, rows = engine_rows(results)
    if not header:
        return []
    specs = ["", "d", "d", ""] + [".1f", ".2f"] * ((len(header) - 4) // 2)
    cells = [[_fmt(value, spec).replace("|", "\\|") for value, spec in zip(row, specs)] for row in rows]
    return aligned_table(header, cells)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table as CSV at full precision (repr of each float), an empty cell for a missing value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()
