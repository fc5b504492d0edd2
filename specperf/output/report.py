"""Reports written from recorded metrics. Writes go to a temporary file first, then rename: never half-written.

:func:`write_summary` is the plugin's ``--specperf-report`` summary (tables only). :func:`write_report` (and
:func:`report_from_json`, its entry point for a ``--benchmark-json`` file) writes a whole report directory:

- ``performance.md``/``.csv``, ``acceptance.md``/``.csv``, ``theory.md``/``.csv``: the three tables of
  :mod:`specperf.output.tables` (markdown formatted, CSV at full precision);
- PNG plots (matplotlib's Agg canvas, never a GUI backend): see :data:`PLOTS`;
- ``report.md``: the tables, the plots, the run's machine and commit; readable as is on GitHub.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specperf.analysis.gates import SAMPLING_NOTE, sampled
from specperf.errors import ConfigError
from specperf.output.benchfile import load_bench_json
from specperf.output.files import atomic_write
from specperf.output.plot_base import Cases, draft_cases, run_context
from specperf.output.plots import PLOTS, write_plots
from specperf.output.serving_report import write_serving
from specperf.output.tables import (
    ACCEPTANCE_COLUMNS,
    PERFORMANCE_COLUMNS,
    THEORY_COLUMNS,
    Column,
    acceptance_table,
    csv_text,
    engine_rows,
    engine_table,
    markdown_table,
    performance_table,
    table_rows,
)

__all__ = ["PLOTS", "load_bench_json", "report_from_json", "write_report", "write_summary"]


def write_summary(results: Mapping[str, Mapping[str, Any]], out_dir: Path) -> Path:
    """outputs/summary.md: the performance and acceptance tables."""
    lines = ["# specperf summary", "", "## Performance per case", "", *performance_table(results), "",
             "## Acceptance per draft", "", *acceptance_table(results), ""]
    path = Path(out_dir) / "summary.md"
    atomic_write(path, "\n".join(lines))
    return path


# =========================================================================== tables


@dataclass(frozen=True)
class TableSpec:
    stem: str  # file name without suffix
    heading: str
    columns: tuple[Column, ...]
    drafts_only: bool


TABLES = (
    TableSpec("performance", "Performance per case", PERFORMANCE_COLUMNS, False),
    TableSpec("acceptance", "Acceptance per draft case", ACCEPTANCE_COLUMNS, True),
    TableSpec("theory", "Speculative decoding against theory", THEORY_COLUMNS, True),
)


def _csv_text(cases: Cases, spec: TableSpec) -> str:
    return csv_text([col.title for col in spec.columns], table_rows(cases, spec.columns, drafts_only=spec.drafts_only))


def _engine_section(cases: Cases, out_dir: Path) -> list[str]:
    """The engines side by side (engines.md/.csv), when a draft ran on more than one engine."""
    lines = engine_table(cases)
    if not lines:
        return []
    atomic_write(out_dir / "engines.csv", csv_text(*engine_rows(cases)))
    heading = "Engines side by side"
    atomic_write(out_dir / "engines.md", "\n".join([f"# {heading}", "", *lines, ""]))
    return [f"## {heading}", "", "Aggregate throughput and speedup of the same draft and k on each engine, each "
            "against its own verifier-only decoding.", "", *lines, "", "CSV: [engines.csv](engines.csv)", ""]


def _write_tables(cases: Cases, out_dir: Path) -> list[str]:
    """Write each table as .md and .csv; return report.md's table section."""
    section: list[str] = _engine_section(cases, out_dir)
    for spec in TABLES:
        lines = markdown_table(cases, spec.columns, drafts_only=spec.drafts_only)
        atomic_write(out_dir / f"{spec.stem}.md", "\n".join([f"# {spec.heading}", "", *lines, ""]))
        atomic_write(out_dir / f"{spec.stem}.csv", _csv_text(cases, spec))
        if len(lines) == 2:  # header and rule only
            lines = ["_No draft cases in this run._"]
        section += [f"## {spec.heading}", "", *lines, "", f"CSV: [{spec.stem}.csv]({spec.stem}.csv)", ""]
    return section


# =========================================================================== report.md


def _machine_rows(machine_info: Mapping[str, Any]) -> list[tuple[str, Any]]:
    cpu: Mapping[str, Any] = machine_info["cpu"] if isinstance(machine_info.get("cpu"), Mapping) else {}
    extra: Mapping[str, Any] = machine_info["specperf"] if isinstance(machine_info.get("specperf"), Mapping) else {}
    system = " ".join(str(machine_info[k]) for k in ("system", "release") if machine_info.get(k))
    return [("cpu", cpu.get("brand_raw")), ("system", system or None),
            ("python", machine_info.get("python_version")), ("specperf", extra.get("specperf")),
            ("torch", extra.get("torch")), ("transformers", extra.get("transformers")),
            ("cuda", extra.get("cuda")), ("gpu", extra.get("gpu")), ("torch threads", extra.get("torch_threads")),
            ("suite config hash", extra.get("config_hash"))]


def _commit_rows(commit_info: Mapping[str, Any]) -> list[tuple[str, Any]]:
    dirty = commit_info.get("dirty")
    return [("commit", commit_info.get("id")), ("branch", commit_info.get("branch")),
            ("dirty", None if dirty is None else ("yes" if dirty else "no")), ("commit time", commit_info.get("time"))]


def _environment(machine_info: Mapping[str, Any] | None, commit_info: Mapping[str, Any] | None,
                 when: str | None) -> list[str]:
    rows = _machine_rows(machine_info or {}) + _commit_rows(commit_info or {}) + [("run at", when)]
    rows = [(name, value) for name, value in rows if value is not None and value != ""]
    if not rows:
        return ["## Environment", "", "_No machine or commit information (pass a --benchmark-json file)._", ""]
    body = [f"| {name} | `{str(value).replace('|', '/')}` |" for name, value in rows]
    return ["## Environment", "", "| what | value |", "| --- | --- |", *body, ""]


def _header(cases: Cases, commit_info: Mapping[str, Any] | None) -> list[str]:
    n_drafts = len(draft_cases(cases))
    commit = commit_info or {}
    at = ""
    # pytest-benchmark writes id "unversioned" and branch "(unknown)" outside a git checkout.
    if commit.get("id") and commit["id"] != "unversioned":
        branch = commit.get("branch")
        at = f" Commit `{str(commit['id'])[:12]}`" + (f" on `{branch}`" if branch and branch != "(unknown)" else "")
        at += " (uncommitted changes)." if commit.get("dirty") else "."
    return ["# specperf report", "", f"{run_context(cases)}; {len(cases)} cases, {n_drafts} with a draft.{at}",
            "", "Speedup is the verifier-only baseline's median latency over the case's (higher is better); "
            "acceptance is accepted / proposed draft tokens; alpha is the per-token agreement.", ""]


def _notes(cases: Cases, notes: Sequence[str]) -> list[str]:
    """What the reader must know to read the numbers: gates that did not apply, and why."""
    found = list(notes)
    if any(sampled(info) for info in draft_cases(cases).values()) and SAMPLING_NOTE not in found:
        found.append(SAMPLING_NOTE)
    return [f"> Note: {note}." for note in found] + ([""] if found else [])


def write_report(cases: Mapping[str, Mapping[str, Any]], out_dir: Path, *,
                 machine_info: Mapping[str, Any] | None = None,
                 commit_info: Mapping[str, Any] | None = None, run_at: str | None = None,
                 notes: Sequence[str] = ()) -> Path:
    """Write tables (markdown and CSV), plots (PNG) and ``report.md`` into ``out_dir``; return report.md's path.

    ``cases`` maps case id -> extra_info (the output contract; a baseline has ``draft`` None). ``machine_info``
    and ``commit_info`` are pytest-benchmark's (``machine_info["specperf"]`` adds torch, CUDA and GPU).
    """
    if not cases:
        raise ConfigError("no cases to report; fix: run `pytest perf/ --benchmark-json=FILE` first and report that")
    out_dir = Path(out_dir)
    lines = _header(cases, commit_info) + _notes(cases, notes)
    lines += _write_tables(cases, out_dir)
    lines += write_serving(cases, out_dir)
    lines += write_plots(cases, out_dir)
    lines += _environment(machine_info, commit_info, run_at)
    path = out_dir / "report.md"
    atomic_write(path, "\n".join(lines))
    return path


def report_from_json(bench_json: Path, out_dir: Path) -> Path:
    """:func:`write_report` for a ``--benchmark-json`` file; ConfigError if it is missing or holds no cases."""
    run = load_bench_json(bench_json)
    return write_report(run.cases, out_dir, machine_info=run.machine_info, commit_info=run.commit_info,
                        run_at=run.datetime)
