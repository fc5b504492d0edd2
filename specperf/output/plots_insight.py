"""The report's plots that explain the numbers: where the time goes, and which k to use."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from specperf.output.plot_base import HEADROOM, Cases, case_label, draft_cases, finish_figure, new_figure, plottable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PARTS = (("verifier", "verifier forwards"), ("draft", "draft forwards / lookup"), ("other", "loop (everything else)"))


def plot_acceptance(cases: Cases) -> Figure | str:
    """Each draft case's spread of acceptance over prompts (a box per case, the samples' count below it), with the
    timed requests' aggregate acceptance (engine counters) and the agreement alpha as markers."""
    drafts = {case_id: info for case_id, info in draft_cases(cases).items()
              if isinstance(info.get("acceptance_per_request"), list) and info["acceptance_per_request"]}
    if not drafts:
        return "no draft case reports acceptance per request"
    labels = [f"{case_label(case_id, info)}\nn={len(info['acceptance_per_request'])}"
              for case_id, info in drafts.items()]
    fig, ax = new_figure(len(labels), height=5.2)
    positions = list(range(1, len(labels) + 1))
    ax.boxplot([[plottable(v) for v in info["acceptance_per_request"]] for info in drafts.values()],
               positions=positions, widths=0.5, showmeans=True, meanprops={"marker": "^", "markersize": 5})
    ax.plot(positions, [plottable(info.get("acceptance_aggregate")) for info in drafts.values()], linestyle="none",
            marker="o", markerfacecolor="none", label="timed requests' acceptance (engine counters)")
    ax.plot(positions, [plottable(info.get("alpha")) for info in drafts.values()], linestyle="none", marker="x",
            label="agreement alpha (per token)")
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylim(0.0, 1.15)
    ax.set_ylabel("draft acceptance per request (0..1)")
    ax.set_xlabel("case (model); n = prompts in the box")
    ax.legend(fontsize=7, loc="upper right")
    return finish_figure(fig, ax, "Draft acceptance over prompts (box: per request; triangle: mean)", drafts,
                         rotate=len(labels) > 3)


def plot_time_breakdown(cases: Cases) -> Figure | str:
    """Stacked bars per case: seconds per new token in verifier forwards, draft forwards or lookup, and the rest."""
    import numpy as np

    shown = {case_id: info for case_id, info in cases.items()
             if math.isfinite(plottable(info.get("time_verifier_per_token")))}
    if not shown:
        return "no case has a time breakdown (vLLM cases and --benchmark-disable runs have none)"
    labels = [case_label(case_id, info) for case_id, info in shown.items()]
    fig, ax = new_figure(len(labels))
    x, bottom = np.arange(len(labels)), np.zeros(len(labels))
    for part, name in PARTS:
        values = np.array([plottable(info.get(f"time_{part}_per_token")) * 1e3 for info in shown.values()])
        values = np.nan_to_num(values)
        ax.bar(x, values, 0.6, bottom=bottom, label=name)
        bottom += values
    for xi, total, info in zip(x, bottom, shown.values()):
        share = plottable(info.get("time_other_share"))
        ax.annotate(f"loop {share:.0%}", (xi, total), textcoords="offset points", xytext=(0, 2), ha="center",
                    fontsize=7)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("time per new token (ms)")
    ax.set_xlabel("case (model)")
    ax.set_ylim(0.0, float(bottom.max()) * HEADROOM)
    ax.legend(fontsize=8, loc="upper left", ncols=3)
    return finish_figure(fig, ax, "Where the time goes (an untimed instrumented pass per case)", shown,
                         rotate=len(labels) > 3)


def plot_predicted_k(cases: Cases) -> Figure | str:
    """Predicted speedup against k per draft (lines), with the measured speedups of the k values that ran."""
    drafts: dict[str, tuple[dict[int, float], dict[int, float], int | None]] = {}
    for info in draft_cases(cases).values():
        predicted = info.get("predicted_speedup_by_k")
        if not isinstance(predicted, dict) or info.get("batch_size", 1) != 1:
            continue
        name = f"{info.get('draft')} ({info.get('slice')})"
        curve, measured, _ = drafts.setdefault(name, ({}, {}, info.get("best_k")))
        curve.update({int(k): float(v) for k, v in predicted.items() if v is not None})
        if math.isfinite(plottable(info.get("speedup"))):
            measured[int(info["k"])] = float(info["speedup"])
    if not drafts:
        return "no case has a speedup prediction (it needs batch 1, greedy decoding and step costs)"
    fig, ax = new_figure(8, width=7.5)
    for name, (curve, measured, best) in drafts.items():
        ks = sorted(curve)
        line = ax.plot(ks, [curve[k] for k in ks], marker=".", label=f"{name}: predicted, best k={best}")[0]
        if measured:
            mk = sorted(measured)
            ax.plot(mk, [measured[k] for k in mk], linestyle="none", marker="o", color=line.get_color(),
                    markerfacecolor="none", markersize=9)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("block size k (hollow circles: measured)")
    ax.set_ylabel("speedup (x)")
    ax.legend(fontsize=7)
    return finish_figure(fig, ax, "Predicted speedup against k, and the measured points", cases)
