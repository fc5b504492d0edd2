"""The report's plots (matplotlib's Agg canvas, never a GUI backend), each a function of recorded metrics.

A plot function returns a Figure, or a string saying why there is nothing to draw (the report lists it as skipped).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specperf.output.plot_base import (
    HEADROOM,
    Cases,
    Plot,
    draft_cases,
    finish_figure,
    grouped_bars,
    has_values,
    new_figure,
    plottable,
    save_png,
    unique_values,
)
from specperf.output.plots_insight import plot_acceptance, plot_predicted_k, plot_time_breakdown
from specperf.output.tables import case_speedup, is_draft_case

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# =========================================================================== the plots


def plot_latency(cases: Cases) -> Figure | str:
    """Latency p50 and p95 per case, baseline included."""
    if not has_values(v for info in cases.values() for v in (info.get("latency_p50"), info.get("latency_p95"))):
        return "no case reports latency_p50 or latency_p95"
    return grouped_bars(cases, [("p50", lambda i: i.get("latency_p50")), ("p95", lambda i: i.get("latency_p95"))],
                        "latency per request (s/token)", "Latency p50 and p95 per case (lower is better)")


def plot_throughput(cases: Cases) -> Figure | str:
    """Throughput p50 and p95 per case, baseline included."""
    keys = ("throughput_p50", "throughput_p95")
    if not has_values(info.get(key) for info in cases.values() for key in keys):
        return "no case reports throughput_p50 or throughput_p95"
    return grouped_bars(cases, [("p50", lambda i: i.get(keys[0])), ("p95", lambda i: i.get(keys[1]))],
                        "throughput per request (tokens/s)", "Throughput p50 and p95 per case (higher is better)")


def plot_speedup(cases: Cases) -> Figure | str:
    """Speedup of each draft case over verifier-only decoding, with the 1.0x line."""
    drafts = draft_cases(cases)
    if not has_values(info.get("speedup") for info in drafts.values()):
        return "no draft case reports speedup"
    fig = grouped_bars(drafts, [("speedup (p50 latency ratio)", case_speedup)],
                       "speedup over verifier-only decoding (x)", "Speedup per draft case")
    ax = fig.axes[0]
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="verifier-only baseline (1.0x)")
    ax.set_ylim(0.0, max(ax.get_ylim()[1], HEADROOM))  # the 1.0x line stays in view when every case is slower
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    return fig


def plot_speedup_vs_k(cases: Cases) -> Figure | str:
    """Speedup against block size k: one line per draft (and slice, when there are several)."""
    drafts = draft_cases(cases)
    slices, sizes = unique_values(drafts, "slice"), unique_values(drafts, "batch_size")
    lines: dict[str, list[tuple[float, float]]] = {}
    for info in drafts.values():
        k, speedup = plottable(info.get("k")), plottable(info.get("speedup"))
        if math.isfinite(k) and math.isfinite(speedup):
            name = (str(info.get("draft")) + (f" ({info.get('slice')})" if len(slices) > 1 else "")
                    + (f" batch {info.get('batch_size', 1)}" if len(sizes) > 1 else ""))
            lines.setdefault(name, []).append((k, speedup))
    if not lines:
        return "no draft case reports both k and speedup"
    fig, ax = new_figure(0, width=8.0)
    for name, points in lines.items():
        ks, speedups = zip(*sorted(points))
        ax.plot(ks, speedups, marker="o", label=name)
    ax.set_xticks(sorted({k for points in lines.values() for k, _ in points}))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="verifier-only (1.0x)")
    ax.set_xlabel("block size k (draft tokens per verifier call)")
    ax.set_ylabel("speedup over verifier-only decoding (x)")
    ax.legend(fontsize=8)
    return finish_figure(fig, ax, "Speedup against block size k", cases)


def plot_position_acceptance(cases: Cases) -> Figure | str:
    """Acceptance at each block position, one line per draft case."""
    curves = {case_id: [plottable(v) for v in info["position_acceptance"]]
              for case_id, info in draft_cases(cases).items()
              if isinstance(info.get("position_acceptance"), list) and has_values(info["position_acceptance"])}
    if not curves:
        return "no draft case reports position_acceptance (e.g. transformers' assisted generation hides it)"
    fig, ax = new_figure(0, width=8.0)
    for case_id, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=case_id)
    ax.set_xticks(range(1, max(len(c) for c in curves.values()) + 1))
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("block position (1 = first draft token)")
    ax.set_ylabel("acceptance at position (fraction, 0..1)")
    ax.legend(fontsize=7, ncols=2 if len(curves) > 6 else 1)
    return finish_figure(fig, ax, "Per-position draft acceptance", cases)


def plot_expected_speedup(cases: Cases) -> Figure | str:
    """Measured speedup against Leviathan's expected speedup, with the y = x line."""
    points = {case_id: (plottable(info.get("expected_speedup")), plottable(info.get("speedup")))
              for case_id, info in draft_cases(cases).items()}
    points = {c: p for c, p in points.items() if all(math.isfinite(v) for v in p)}
    if not points:
        return "no draft case reports both expected_speedup and speedup"
    fig, ax = new_figure(0, height=6.4, width=7.6)  # square-ish, so y = x reads as the diagonal
    xs, ys = zip(*points.values())
    ax.scatter(xs, ys, zorder=3)
    for case_id, (x, y) in points.items():
        ax.annotate(case_id, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    lo, hi = min(0.0, *xs, *ys), max(*xs, *ys) * 1.1
    ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=1, label="measured = expected")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("expected speedup, Leviathan et al. with measured costs (x)")
    ax.set_ylabel("measured speedup (x)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return finish_figure(fig, ax, "Measured against expected speedup", cases)


def _batch_lines(cases: Cases, value: Callable[[Mapping[str, Any]], Any],
                 drafts_only: bool) -> dict[str, list[tuple[float, float]]]:
    """name -> (batch size, value) points: one line per (draft, k) and slice, and one for the baseline."""
    slices = unique_values(cases, "slice")
    lines: dict[str, list[tuple[float, float]]] = {}
    for info in cases.values():
        if drafts_only and not is_draft_case(info):
            continue
        size, y = plottable(info.get("batch_size", 1)), plottable(value(info))
        if not (math.isfinite(size) and math.isfinite(y)):
            continue
        name = f"{info.get('draft')} k={info.get('k')}" if is_draft_case(info) else "verifier-only baseline"
        name += f" ({info.get('slice')})" if len(slices) > 1 else ""
        lines.setdefault(name, []).append((size, y))
    return {name: sorted(points) for name, points in lines.items() if len(points) > 1}


def _batch_axes(lines: dict[str, list[tuple[float, float]]], ylabel: str) -> tuple[Figure, Axes]:
    fig, ax = new_figure(0, width=8.0)
    for name, points in lines.items():
        sizes, values = zip(*points)
        ax.plot(sizes, values, marker="o", label=name, linestyle=":" if name.startswith("verifier") else "-")
    ax.set_xscale("log", base=2)
    ticks = sorted({b for points in lines.values() for b, _ in points})
    ax.set_xticks(ticks, [str(int(b)) for b in ticks])
    ax.set_xlabel("batch size (requests decoded together)")
    ax.set_ylabel(ylabel)
    return fig, ax


def plot_throughput_vs_batch(cases: Cases) -> Figure | str:
    """Aggregate throughput (all new tokens / wall) against batch size, per draft and for the baseline."""
    lines = _batch_lines(cases, lambda i: i.get("throughput_aggregate"), drafts_only=False)
    if not lines:
        return "the run has one batch size (set batch_size: [1, 4, 8] or --specperf-batch=1,4,8)"
    fig, ax = _batch_axes(lines, "aggregate throughput (tok/s, whole batch)")
    ax.set_ylim(0.0, max(v for points in lines.values() for _, v in points) * HEADROOM)
    ax.legend(fontsize=8)
    return finish_figure(fig, ax, "Aggregate throughput against batch size (higher is better)", cases)


def plot_speedup_vs_batch(cases: Cases) -> Figure | str:
    """Speedup over the baseline at the same batch size, against batch size; marks where a draft stops paying."""
    lines = _batch_lines(cases, lambda i: i.get("speedup_aggregate"), drafts_only=True)
    if not lines:
        return "the run has one batch size (set batch_size: [1, 4, 8] or --specperf-batch=1,4,8)"
    fig, ax = _batch_axes(lines, "speedup vs same-batch baseline (x)")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="verifier-only (1.0x)")
    for points in lines.values():
        losing = [b for b, v in points if v < 1.0]
        if losing:
            ax.annotate(f"below 1x from batch {int(min(losing))}", (min(losing), 1.0), textcoords="offset points",
                        xytext=(4, -12), fontsize=7)
    ax.set_ylim(0.0, max(HEADROOM, max(v for points in lines.values() for _, v in points) * HEADROOM))
    ax.legend(fontsize=8)
    return finish_figure(fig, ax, "Speedup against batch size (where speculation stops paying)", cases)


@dataclass(frozen=True)
class PlotSpec:
    stem: str  # file name without .png
    title: str
    make: Plot


PLOTS = (
    PlotSpec("latency", "Latency p50 and p95 per case", plot_latency),
    PlotSpec("throughput", "Throughput p50 and p95 per case", plot_throughput),
    PlotSpec("speedup", "Speedup per draft case", plot_speedup),
    PlotSpec("acceptance", "Draft acceptance and agreement", plot_acceptance),
    PlotSpec("speedup_vs_k", "Speedup against block size k", plot_speedup_vs_k),
    PlotSpec("position_acceptance", "Per-position acceptance", plot_position_acceptance),
    PlotSpec("expected_speedup", "Measured against expected speedup", plot_expected_speedup),
    PlotSpec("throughput_vs_batch", "Aggregate throughput against batch size", plot_throughput_vs_batch),
    PlotSpec("speedup_vs_batch", "Speedup against batch size", plot_speedup_vs_batch),
    PlotSpec("time_breakdown", "Where the time goes", plot_time_breakdown),
    PlotSpec("predicted_k", "Predicted speedup against k", plot_predicted_k),
)


def write_plots(cases: Cases, out_dir: Path) -> list[str]:
    """Write every plot that has data; return report.md's plot section (skipped plots say why)."""
    section, skipped = ["## Plots", ""], []
    for spec in PLOTS:
        result = spec.make(cases)
        if isinstance(result, str):
            skipped.append(f"- {spec.title} (`{spec.stem}.png`): skipped, {result}.")
            log.info("plot %s skipped: %s", spec.stem, result)
            continue
        save_png(result, out_dir / f"{spec.stem}.png")
        section += [f"### {spec.title}", "", f"![{spec.title}]({spec.stem}.png)", ""]
    if skipped:
        section += ["### Skipped plots", "", *skipped, ""]
    return section
