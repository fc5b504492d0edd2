"""What every report plot shares: figures on matplotlib's Agg canvas (never a GUI backend), labels, titles, bars."""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specperf.output.files import atomic_write_bytes
from specperf.output.tables import case_model, is_draft_case

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Cases = Mapping[str, Mapping[str, Any]]
DPI = 110
_MAX_WIDTH_IN = 16.0  # a figure wider than this is unreadable on a GitHub page anyway
_LABEL_WIDTH = 22  # characters per tick-label line: fits embedded:draft-medium, wraps long hub ids at '/'
HEADROOM = 1.3  # y range above the tallest bar: room for the bar labels and a one-row legend


def plottable(value: Any) -> float:
    """A plottable float: NaN for None or anything that is not a number (matplotlib leaves a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def has_values(values: Iterable[Any]) -> bool:
    return any(math.isfinite(plottable(v)) for v in values)


def wrap_label(text: str, width: int = _LABEL_WIDTH) -> str:
    """Wrap a long hub id or case id for a tick label; prefer breaks after '/', then '-'."""
    pieces = re.findall(r"[^/\-]+[/\-]?|[/\-]", text)
    lines, current = [], ""
    for piece in pieces:
        if current and len(current) + len(piece) > width:
            lines.append(current)
            current = ""
        current += piece
    lines.append(current)
    return "\n".join(part for line in lines for part in textwrap.wrap(line, width) or [""])


def case_label(case_id: str, info: Mapping[str, Any]) -> str:
    model = case_model(info)
    text = wrap_label(case_id)
    return text if model in case_id else f"{text}\n({wrap_label(model)})"


def unique_values(cases: Cases, key: str) -> list[str]:
    return list(dict.fromkeys(str(info[key]) for info in cases.values() if info.get(key) is not None))


def run_context(cases: Cases) -> str:
    """'verifier V | device D (dtype) | slice S': what every plot title names."""
    verifier = ", ".join(unique_values(cases, "verifier")) or "?"
    device = ", ".join(unique_values(cases, "device")) or "?"
    dtype = ", ".join(unique_values(cases, "dtype"))
    slices = unique_values(cases, "slice")
    noun = "slice" if len(slices) == 1 else "slices"
    return (f"verifier {verifier} | device {device}{f' ({dtype})' if dtype else ''} | "
            f"{noun} {', '.join(slices) or '?'}")


def new_figure(n_groups: int, height: float = 4.8, width: float | None = None) -> tuple[Figure, Axes]:
    """A Figure on the Agg canvas: pyplot is never imported, so no GUI backend and no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if width is None:  # room for each group's wrapped tick label
        width = min(_MAX_WIDTH_IN, max(6.4, 1.1 * n_groups + 2.5))
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def finish_figure(fig: Figure, ax: Axes, title: str, cases: Cases, *, rotate: bool = False) -> Figure:
    lines = [title, run_context(cases)]
    ax.set_title("\n".join(textwrap.fill(line, 100) for line in lines), fontsize=10)
    if rotate:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())


def grouped_bars(cases: Cases, series: Sequence[tuple[str, Callable[[Mapping[str, Any]], Any]]],
                 ylabel: str, title: str, *, ylim: tuple[float, float] | None = None) -> Figure:
    """One group per case, one bar per series; missing values leave a gap."""
    import numpy as np

    labels = [case_label(case_id, info) for case_id, info in cases.items()]
    fig, ax = new_figure(len(labels))
    x, width = np.arange(len(labels)), 0.8 / len(series)
    tallest = 0.0
    for i, (name, get) in enumerate(series):
        values = [plottable(get(info)) for info in cases.values()]
        tallest = max([tallest, *(v for v in values if math.isfinite(v))])
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("case (model)")
    ax.set_ylabel(ylabel)
    if ylim is None and tallest > 0:
        ylim = (0.0, tallest * HEADROOM)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8, loc="upper left", ncols=len(series))
    return finish_figure(fig, ax, title, cases, rotate=len(labels) > 3)


Plot = Callable[[Cases], "Figure | str"]  # a figure, or the reason it was skipped


def draft_cases(cases: Cases) -> dict[str, Mapping[str, Any]]:
    return {case_id: info for case_id, info in cases.items() if is_draft_case(info)}
