"""The A/B report from in-session comparisons (:mod:`specperf.analysis.ab`): a table, a forest plot, ab.md/.csv/.png.

:func:`ab_table` gives the aligned markdown lines, one per case and metric; :func:`ab_markdown` the whole document
(sides, grain, confidence, the table, the work comparison, notes); :func:`plot_ab` the forest plot of B / A with its
interval per case, one panel per metric; :func:`write_ab_report` writes all three into a directory, each file
atomically and ``ab.md``, which links the others, last.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from specperf.analysis.ab import DIFFERENT, SAME, SPEEDUP, WALL, WORK_FIELDS, AbResult, Metric, WorkDifference
from specperf.output.files import atomic_write
from specperf.output.plot_base import DPI, save_png, wrap_label
from specperf.output.tables import aligned_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

METRICS = (WALL, SPEEDUP)  # the order of a case's rows and of the plot's panels
UNITS = {WALL.name: " s", SPEEDUP.name: "x"}  # suffix of a side's median
GRAINS = {  # what one pair is
    "duet": "one round of A and one round of B run at the same time, each side pinned to its own CPUs and the CPUs "
            "swapped between the sides in ABBA order, so a slowdown of the machine falls on both rounds of a pair",
    "alternate": "one round of A and one round of B run next to each other (ABBA order), so drift of the machine "
                 "cancels in the pair's ratio",
    "case": "one whole case run of A and one of B, in fresh worker processes, next to each other (ABBA order)",
}
AB_HEADER = ("case", "metric", "A median", "B median", "ratio B/A", "interval", "decision", "pairs")
CSV_HEADER = tuple(f.name for f in dataclasses.fields(AbResult))
COLOURS = {"DIFFERENT slower": "tab:red", "DIFFERENT faster": "tab:green", "SAME": "tab:blue",
           "UNKNOWN": "tab:gray"}
RATIO_LABEL = "B / A (ratio; Hodges-Lehmann estimate over the pairs)"


def _metric_rank(name: str) -> int:
    names = [m.name for m in METRICS]
    return names.index(name) if name in names else len(names)


def sorted_results(results: Sequence[AbResult]) -> list[AbResult]:
    """By case id, then metric: wall, speedup, then any other metric by name."""
    return sorted(results, key=lambda r: (r.case_id, _metric_rank(r.metric), r.metric))


def verdict(result: AbResult) -> str:
    """'DIFFERENT slower', 'DIFFERENT faster', 'SAME' or 'UNKNOWN'."""
    return result.decision if result.direction is None else f"{result.decision} {result.direction}"


def _cells(result: AbResult) -> list[str]:
    unit = UNITS.get(result.metric, "")
    return [result.case_id, result.metric, f"{result.a_median:#.4g}{unit}", f"{result.b_median:#.4g}{unit}",
            f"{result.ratio:.4f}", f"[{result.low:.4f}, {result.high:.4f}]", verdict(result), str(result.n_rounds)]


def ab_table(results: Sequence[AbResult]) -> list[str]:
    """Aligned markdown lines (header, rule, one line per case and metric, sorted by :func:`sorted_results`):
    case, metric, each side's median (s for wall, x for speedup), B/A, its interval, the decision and the pairs."""
    # A pipe inside a cell (an odd hub id) would split the markdown column.
    rows = [[cell.replace("|", "\\|") for cell in _cells(r)] for r in sorted_results(results)]
    return aligned_table(AB_HEADER, rows)


# =========================================================================== ab.md


def _percent(values: Sequence[float], digits: int) -> str:
    return " / ".join(f"{100 * v:.{digits}g}%" for v in sorted(set(values)))


def _header(results: Sequence[AbResult], *, a_label: str, b_label: str, grain: str) -> list[str]:
    if grain not in GRAINS:
        raise ValueError(f"grain must be one of {', '.join(GRAINS)}, got {grain!r}")
    lines = ["# specperf A/B comparison", "", f"Side A (reference): `{a_label}`. Side B: `{b_label}`.", "",
             f"Grain: {grain}. Each pair is {GRAINS[grain]}."]
    if results:
        confidence = _percent([r.confidence for r in results], 6)
        effect = _percent([r.min_effect for r in results], 3)
        lines += ["", f"Confidence: {confidence} per interval (the session's Bonferroni level); min effect {effect}. "
                  "B/A is the Hodges-Lehmann estimate of the pairs' ratios, the interval the exact signed-rank "
                  f"interval. {DIFFERENT}: the whole interval lies beyond the min effect; {SAME}: within the "
                  "equivalence margin; else UNKNOWN. Only a DIFFERENT slowdown fails."]
    return [*lines, ""]


def _work_section(work_differences: Sequence[WorkDifference]) -> list[str]:
    lines = ["## Work metrics", ""]
    if not work_differences:
        return [*lines, f"Deterministic work ({', '.join(WORK_FIELDS)}) is identical on every case.", ""]
    n = len(work_differences)
    lines.append(f"{n} difference{'s' if n > 1 else ''} in deterministic work between the sides (greedy decoding "
                 "must do the same work on both):")
    return [*lines, "", *(f"- {d.message()}" for d in work_differences), ""]


def ab_markdown(results: Sequence[AbResult], work_differences: Sequence[WorkDifference], *, a_label: str,
                b_label: str, grain: str, notes: Sequence[str]) -> str:
    """The A/B document: which side is which, the grain ('round' or 'case') and the confidence, the table of
    :func:`ab_table`, the differences in deterministic work (or that there are none) and ``notes``."""
    lines = _header(results, a_label=a_label, b_label=b_label, grain=grain)
    lines += ["## Results", "", *(ab_table(results) if results else ["_No case was compared._"]), ""]
    lines += _work_section(work_differences)
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


# =========================================================================== ab.png


def _metric(name: str) -> Metric:
    return next((m for m in METRICS if m.name == name), Metric(name, higher_is_better=True))


def _x_range(results: Sequence[AbResult], min_effect: float) -> tuple[float, float]:
    """The ratios, the finite interval ends and both min-effect lines, with a margin."""
    values = [v for r in results for v in (r.ratio, r.low, r.high) if math.isfinite(v) and v > 0]
    lo, hi = min([1 / (1 + min_effect), *values]), max([1 + min_effect, *values])
    pad = 0.08 * (hi - lo) or 0.01
    return lo - pad, hi + pad


def _forest(ax: Axes, results: Sequence[AbResult], cases: Sequence[str], min_effect: float) -> None:
    """One metric's panel: B / A and its interval per case (a missing end drawn to the edge, as an arrow)."""
    lo, hi = _x_range(results, min_effect)
    ax.axvline(1.0, color="black", linewidth=1)
    for edge in (1 / (1 + min_effect), 1 + min_effect):
        ax.axvline(edge, color="black", linestyle="--", linewidth=0.8)
    for r in results:
        y, colour = cases.index(r.case_id), COLOURS.get(verdict(r), "tab:purple")
        left, right = max(r.low, lo), min(r.high, hi)  # only an open end (0 or inf) lies outside the range
        ax.plot([left, right], [y, y], color=colour, linewidth=2)
        for end, clipped, marker in ((left, r.low < lo, "<"), (right, r.high > hi, ">")):
            if clipped:
                ax.plot([end], [y], marker=marker, color=colour, markersize=6)
        ax.plot([r.ratio], [y], marker="o", color=colour, markersize=7, linestyle="none", label=verdict(r))
    ax.set_xlim(lo, hi)
    metric = _metric(results[0].metric)
    better = "higher" if metric.higher_is_better else "lower"
    ax.set_title(f"{metric.name} ({UNITS.get(metric.name, '').strip() or 'ratio'}): {better} is better",
                 fontsize=10)
    ax.set_xlabel(RATIO_LABEL, fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One entry per decision shown, in COLOURS order, plus the lines."""
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    order = [label for label in COLOURS if label in handles] + sorted(set(handles) - set(COLOURS))
    fig.legend([handles[label] for label in order], order, loc="lower center", ncols=len(order), fontsize=8)


def ab_figure(results: Sequence[AbResult], *, min_effect: float) -> Figure:
    """The forest plot: one panel per metric (wall, speedup), one row per case; a solid line at B / A = 1 and
    dashed lines at 1 / (1 + min_effect) and 1 + min_effect; points coloured by decision."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("no A/B result to plot")
    ordered = sorted_results(results)
    cases = list(dict.fromkeys(r.case_id for r in ordered))
    names = list(dict.fromkeys(r.metric for r in ordered))
    names.sort(key=lambda name: (_metric_rank(name), name))
    # pyplot is never imported (as plot_base): the Agg canvas, no GUI backend, no global state.
    fig = Figure(figsize=(min(16.0, 3.0 + 5.0 * len(names)), 2.2 + 0.55 * len(cases)), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names):
        _forest(ax, [r for r in ordered if r.metric == name], cases, min_effect)
    axes[0].set_yticks(range(len(cases)), [wrap_label(c, 48) for c in cases], fontsize=8)
    axes[0].set_ylim(len(cases) - 0.5, -0.5)  # the first case on top, as in the table
    axes[0].set_ylabel("case (pytest id)")
    _legend(fig, axes)
    fig.suptitle(f"B / A per case, min effect {100 * min_effect:.3g}% (dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_ab(results: Sequence[AbResult], path: Path, *, min_effect: float) -> Path:
    """Draw :func:`ab_figure` and write it to ``path`` as PNG, atomically; return ``path``."""
    path = Path(path)
    save_png(ab_figure(results, min_effect=min_effect), path)
    return path


# =========================================================================== the directory


def ab_csv(results: Sequence[AbResult]) -> str:
    """One row per case and metric (:func:`sorted_results` order), every AbResult field at full precision; an
    empty cell for a missing direction."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in sorted_results(results):
        writer.writerow(["" if v is None else v for v in (getattr(r, name) for name in CSV_HEADER)])
    return buffer.getvalue()


def write_ab_report(results: Sequence[AbResult], work_differences: Sequence[WorkDifference], out_dir: Path, *,
                    a_label: str, b_label: str, grain: str, min_effect: float, notes: Sequence[str]) -> Path:
    """Write ``ab.csv``, ``ab.png`` (without results, none: ab.md says so) and ``ab.md`` into ``out_dir``; return
    ab.md's path. Everything is built before the first write and each file is written atomically, ab.md last, so
    a failure (an unwritable directory) leaves no partial file and no ab.md that links a missing one."""
    out_dir = Path(out_dir)
    text = ab_markdown(results, work_differences, a_label=a_label, b_label=b_label, grain=grain, notes=notes)
    figure = ab_figure(results, min_effect=min_effect) if results else None
    atomic_write(out_dir / "ab.csv", ab_csv(results))
    if figure is None:
        text += "\n## Plot\n\n_Skipped: no case was compared._\n"
    else:
        save_png(figure, out_dir / "ab.png")
        text += "\n## Plot\n\n![B / A per case and metric](ab.png)\n"
    text += "\nCSV: [ab.csv](ab.csv)\n"
    path = out_dir / "ab.md"
    atomic_write(path, text)
    return path
