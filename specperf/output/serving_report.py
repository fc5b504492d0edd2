"""Serving mode in the report: server cases (draft ``engine: server``), each one load level measured on the
speculative server and on its twin (the same verifier, no speculation) at the same load.

- ``serving.md``/``.csv``: one row per server case, latency (TTFT, TPOT, ITL) of both sides, throughput, goodput,
  and acceptance from the server's ``/metrics`` beside the audit's (markdown formatted, CSV at full precision);
- ``serving.json``: the crossover rows, per draft, k, slice and load axis: the speedups at each load and the lowest
  load at which speculation stops paying (:func:`specperf.analysis.serving.crossover`);
- ``serving_speedup.png``: TPOT speedup (solid) and throughput speedup (dashed) against load, one panel per axis.

:func:`write_serving` writes them and returns report.md's section; a run without server cases writes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specperf.analysis.serving import crossover, crossover_sentence
from specperf.output.files import atomic_write
from specperf.output.plot_base import DPI, HEADROOM, Cases, has_values, plottable, run_context, save_png
from specperf.output.tables import Column, Info, csv_text, markdown_table, table_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["SERVING_COLUMNS", "CrossoverRow", "crossovers", "is_server_case", "plot_serving_speedup",
           "serving_rows", "serving_table", "write_serving"]

HEADING = "Serving under load"
AXES = ("concurrency", "rate")  # the load axes, in panel order
AXIS_LABELS = {"concurrency": "concurrency (requests in flight)", "rate": "request rate (requests/s)"}
SENTENCE_AXES = {"concurrency": "concurrency", "rate": "request_rate"}  # the axis names of analysis.serving
PAYING_LABEL = "speculation stops paying (1.0x)"


def _key(name: str) -> Callable[[str, Info], Any]:
    return lambda _case_id, info: info.get(name)


SERVING_COLUMNS: tuple[Column, ...] = (
    Column("case", lambda case_id, _info: case_id),
    Column("load", _key("load")),
    Column("TTFT p50 spec (ms)", _key("ttft_ms_p50"), ".1f"),
    Column("TTFT p50 twin (ms)", _key("twin_ttft_ms_p50"), ".1f"),
    Column("TPOT p50 spec (ms)", _key("tpot_ms_p50"), ".2f"),
    Column("TPOT p50 twin (ms)", _key("twin_tpot_ms_p50"), ".2f"),
    Column("TPOT p95 spec (ms)", _key("tpot_ms_p95"), ".2f"),
    Column("ITL p50 (ms/tok)", _key("itl_ms_p50"), ".2f"),
    Column("chunk ITL p50 (ms)", _key("chunk_itl_ms_p50"), ".2f"),
    Column("tokens / chunk", _key("tokens_per_chunk_mean"), ".2f"),
    Column("output spec (tok/s)", _key("output_tok_s"), ".1f"),
    Column("output twin (tok/s)", _key("twin_output_tok_s"), ".1f"),
    Column("TPOT speedup (x)", _key("tpot_speedup"), ".2f"),
    Column("throughput speedup (x)", _key("throughput_speedup"), ".2f"),
    Column("goodput (req/s)", _key("goodput_req_s"), ".2f"),
    Column("SLO attainment", _key("slo_attainment"), ".3f"),
    Column("acceptance (/metrics)", _key("server_acceptance_rate"), ".3f"),
    Column("acceptance (audit)", _key("acceptance_aggregate"), ".3f"),
    Column("exact match vs twin", _key("exact_match_rate"), ".3f"),
)


def is_server_case(info: Info) -> bool:
    """A server case: a draft served by ``engine: server`` and measured at one load level."""
    return info.get("engine") == "server"


def _served(cases: Cases) -> dict[str, Info]:
    return {case_id: info for case_id, info in cases.items() if is_server_case(info)}


def serving_rows(cases: Cases) -> tuple[list[str], list[list[Any]]]:
    """(header, raw rows): one row per server case in ``cases`` order, full precision, None where unknown."""
    return [col.title for col in SERVING_COLUMNS], table_rows(_served(cases), SERVING_COLUMNS)


def serving_table(cases: Cases) -> list[str]:
    """:func:`serving_rows` as aligned markdown lines ('-' for a missing value); [] without server cases."""
    served = _served(cases)
    return markdown_table(served, SERVING_COLUMNS) if served else []


# =========================================================================== crossovers


def load_position(info: Info) -> tuple[str, float] | None:
    """(axis, load) of a server case: ("concurrency", N) or ("rate", requests/s, inf for 'rinf'); None if the
    case names no load that can be read."""
    for axis, key in (("concurrency", "concurrency"), ("rate", "request_rate")):
        value = plottable(info.get(key))
        if math.isfinite(value):
            return axis, value
    label = str(info.get("load") or "")
    # 'rinf' records request_rate None (JSON has no infinity); a hand-edited file may hold the label alone.
    named = {"c": "concurrency", "r": "rate"}.get(label[:1])
    try:
        return (named, float(label[1:])) if named else None
    except ValueError:
        return None


@dataclass(frozen=True)
class CrossoverRow:
    """One draft, k, slice and load axis: the speedups at each load, ascending, and where speculation stops paying."""

    draft: str
    k: int | None
    slice: str | None
    axis: str  # "concurrency" or "rate"
    loads: tuple[float, ...]  # ascending; inf is 'rinf' (requests sent at once)
    tpot_speedups: tuple[float | None, ...]  # twin TPOT p50 / speculative TPOT p50, per load
    throughput_speedups: tuple[float | None, ...]  # speculative output tok/s / the twin's, per load
    crossover: float | None  # the lowest load whose TPOT speedup is below 1; None if speculation pays at all
    sentence: str

    def as_json(self) -> dict[str, Any]:
        """serving.json's entry; an infinite load is written "inf" (JSON has no infinity)."""
        return {"draft": self.draft, "k": self.k, "slice": self.slice, "axis": self.axis,
                "loads": [_json_load(x) for x in self.loads], "tpot_speedup": list(self.tpot_speedups),
                "throughput_speedup": list(self.throughput_speedups),
                f"crossover_{self.axis}": _json_load(self.crossover), "sentence": self.sentence}


def _json_load(value: float | None) -> float | int | str | None:
    if value is None:
        return None
    if math.isinf(value):
        return "inf"
    return int(value) if value.is_integer() else value


def _speedup(value: Any) -> float | None:
    number = plottable(value)
    return number if math.isfinite(number) else None


def crossovers(cases: Cases) -> list[CrossoverRow]:
    """One row per (draft, k, slice, axis) of the server cases, in the order the suite first ran each; the
    crossover is found on the TPOT speedup."""
    served = _served(cases)
    several_slices = len({info.get("slice") for info in served.values()}) > 1
    groups: dict[tuple[str, Any, Any, str], list[tuple[float, Info]]] = {}
    for info in served.values():
        position = load_position(info)
        if position is not None:
            key = (str(info.get("draft")), info.get("k"), info.get("slice"), position[0])
            groups.setdefault(key, []).append((position[1], info))
    rows = []
    for (draft, k, slice_, axis), points in groups.items():
        points.sort(key=lambda point: point[0])
        loads = tuple(load for load, _ in points)
        tpot = tuple(_speedup(info.get("tpot_speedup")) for _, info in points)
        throughput = tuple(_speedup(info.get("throughput_speedup")) for _, info in points)
        name = f"{draft} k={k}" + (f" ({slice_})" if several_slices else "")
        levels = list(zip(loads, tpot))
        rows.append(CrossoverRow(draft=draft, k=k, slice=None if slice_ is None else str(slice_), axis=axis,
                                 loads=loads, tpot_speedups=tpot, throughput_speedups=throughput,
                                 crossover=crossover(levels),
                                 sentence=crossover_sentence(name, SENTENCE_AXES[axis], levels,
                                                             "TPOT speedup")))
    return rows


# =========================================================================== the plot


def _panels(n: int) -> tuple[Figure, list[Axes]]:
    """A Figure of ``n`` side-by-side panels on the Agg canvas (as plot_base.new_figure: pyplot never imported)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2 * n, 4.8), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _x_positions(rows: Sequence[CrossoverRow]) -> tuple[dict[float, float], list[str]]:
    """Load -> x position, and the tick labels; an infinite rate sits one step right of the largest finite one."""
    loads = sorted({x for row in rows for x in row.loads})
    finite = [x for x in loads if math.isfinite(x)]
    places = {x: (x if math.isfinite(x) else 2.0 * max(finite, default=1.0)) for x in loads}
    return places, [f"{x:g}" if math.isfinite(x) else "inf" for x in loads]


def _draw_axis(ax: Axes, axis: str, rows: Sequence[CrossoverRow], colours: Mapping[str, str]) -> float:
    """One panel: both speedups of each row against load; returns the largest speedup drawn."""
    places, ticks = _x_positions(rows)
    tallest = 0.0
    for row in rows:
        name, xs = f"{row.draft} k={row.k}", [places[x] for x in row.loads]
        for values, style, what in ((row.tpot_speedups, "-", "TPOT"), (row.throughput_speedups, "--", "throughput")):
            ys = [plottable(v) for v in values]
            if has_values(ys):
                ax.plot(xs, ys, marker="o", linestyle=style, color=colours[name], label=f"{name} {what} speedup")
                tallest = max([tallest, *(y for y in ys if math.isfinite(y))])
        if row.crossover is not None:
            label = f"{row.crossover:g}" + (" req/s" if axis == "rate" else "")
            ax.annotate(f"below 1x from {label}", (places[row.crossover], 1.0), textcoords="offset points",
                        xytext=(4, -12), fontsize=7, color=colours[name])
    if axis == "concurrency":
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(places.values()), ticks)
    ax.axhline(1.0, color="black", linestyle=":", linewidth=1, label=PAYING_LABEL)
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel("speedup over the twin without speculation (x)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return tallest


def plot_serving_speedup(cases: Cases) -> Figure | str:
    """TPOT speedup (solid) and throughput speedup (dashed) against load, one colour per draft and k, one panel
    per load axis (concurrency on a log2 axis, request rate)."""
    rows = [row for row in crossovers(cases) if has_values([*row.tpot_speedups, *row.throughput_speedups])]
    if not rows:
        return "no server case reports tpot_speedup or throughput_speedup"
    axes = [axis for axis in AXES if any(row.axis == axis for row in rows)]
    names = list(dict.fromkeys(f"{row.draft} k={row.k}" for row in rows))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, panels = _panels(len(axes))
    tallest = max(_draw_axis(ax, axis, [r for r in rows if r.axis == axis], colours)
                  for ax, axis in zip(panels, axes))
    for ax in panels:
        ax.set_ylim(0.0, max(HEADROOM, tallest * HEADROOM))  # the 1.0x line stays in view
    fig.suptitle(f"Speedup under load (higher is better)\n{run_context(_served(cases))}", fontsize=10)
    fig.tight_layout()
    return fig


# =========================================================================== the files


def _metrics_notes(served: Cases) -> list[str]:
    """Why a server's /metrics acceptance is missing, once per distinct reason."""
    notes = dict.fromkeys(str(info["server_metrics_note"]) for info in served.values()
                          if info.get("server_metrics_note"))
    return [f"> Note: {note}." for note in notes] + ([""] if notes else [])


def write_serving(cases: Cases, out_dir: Path) -> list[str]:
    """Write serving.md, serving.csv, serving.json and serving_speedup.png into ``out_dir`` when ``cases`` holds a
    server case; return report.md's serving section ([] and nothing written when there is none)."""
    served = _served(cases)
    if not served:
        return []
    out_dir = Path(out_dir)
    rows = crossovers(served)
    atomic_write(out_dir / "serving.csv", csv_text(*serving_rows(served)))
    document = {"crossovers": [row.as_json() for row in rows]}
    atomic_write(out_dir / "serving.json", json.dumps(document, indent=2, allow_nan=False) + "\n")
    figure = plot_serving_speedup(served)
    if isinstance(figure, str):
        plot = [f"_Plot `serving_speedup.png` skipped: {figure}._"]
    else:
        save_png(figure, out_dir / "serving_speedup.png")
        plot = ["![Speedup under load](serving_speedup.png)"]
    body = ["Each server case is one load level, run on the speculative server and on its twin (the same verifier "
            "without speculation) at the same load. TPOT speedup is the twin's TPOT p50 over the speculative "
            "server's; throughput speedup is the ratio of output tok/s (higher is better for both).", "",
            *[f"- {row.sentence}" for row in rows], *([""] if rows else []), *_metrics_notes(served),
            *serving_table(served), "", *plot, ""]
    atomic_write(out_dir / "serving.md", "\n".join([f"# {HEADING}", "", *body]))
    return [f"## {HEADING}", "", *body, "CSV: [serving.csv](serving.csv); crossovers: [serving.json](serving.json)",
            ""]
