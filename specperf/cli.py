"""The ``specperf`` command line: write a report from a benchmark run, compare runs and gate, merge shards.

``specperf report BENCH.json [--out DIR]``
    Write tables (markdown and CSV), plots (PNG) and ``report.md`` from a ``pytest perf/ --benchmark-json`` file
    into DIR (default ``outputs/``); print the path of ``report.md``.

``specperf compare OLD [OLD ...] NEW.json [--thresholds PATH] [--config PATH] [--format text|github] [--output F]``
    OLD: one or more ``--benchmark-json`` files or folders of them. Match cases by ``case_id``; for each, show old
    (the newest OLD run), new and change of speedup, acceptance_aggregate, mean_accepted_length, latency_p50,
    latency_p95 and throughput_p50. Cases on one side only are listed as added or removed (not a failure), but runs
    that share no draft case of NEW come from different suites: bad input. Every draft case of NEW is then gated by
    :func:`specperf.analysis.gates.evaluate` against its OLD runs, exactly as the plugin's ``--specperf-baseline``
    does, with the thresholds of the suite ``--config`` (default: the
    packaged embedded suite) merged with the ``--thresholds`` file. The table (or the JSON) goes to ``--output``
    or stdout; regressions and the verdict go to stderr. OLD runs of another kind of machine than NEW (GPU, CPU
    model, torch, CUDA, cuDNN or transformers, as ``machine_info`` records them) are refused as bad input: the
    deterministic gates assume bit-identical results, which only one kind gives. A case that errored (its entry
    names it but holds no metric) is skipped with a message; an errored case in NEW fails the comparison (exit 1),
    since nothing of it was gated.

``specperf merge SHARD.json [SHARD.json ...] -o OUT.json``
    Merge the ``--benchmark-json`` files of one suite run split with ``--specperf-shard I/N`` into one file that
    every reader of a whole run accepts. Refuses shards of different suites, commits or kinds of machine, and names
    duplicate and missing cases (a case that errored is present: its entry names it).

``specperf machine-kind BENCH.json``
    Print the kind of machine BENCH.json ran on (GPU, torch, CUDA, cuDNN, transformers, CPU, architecture) as a
    cache-key fragment, e.g. ``gpu-NVIDIA-H100-80GB-HBM3_torch-2.13.0+cu128_cuda-12.8_..._3f2a9c0d1e4b``: the
    readable values, then a hash of the exact kind. CI keys its baseline cache with it, so a run only ever restores
    main's runs of its own kind.

Exit codes: 0 no regression; 1 a gate failed or a NEW case errored (compare only); 2 bad input (missing or
malformed file, a file of another pytest-benchmark major version, two runs of different suites or kinds of machine,
bad thresholds or suite), with a message on stderr; nothing is written then.

``--format github`` writes JSON for github-action-benchmark, one tool type per file. The values are NEW's:

- ``--output FILE`` (default stdout), tool ``customBiggerIsBetter``: speedup (unit ``x``), throughput_p50
  (``tok/s``), acceptance_aggregate and alpha (``fraction``), mean_accepted_length (``tokens/call``);
- ``FILE`` with its suffix replaced by ``.smaller.json`` (only when ``--output`` is given), tool
  ``customSmallerIsBetter``: latency_p50 and latency_p95 (``s/token``), ttft_p50 (``s``).

Each file is a JSON list of ``{"name": "<case_id> <metric>", "unit": str, "value": float, "extra": str}``, e.g.
``{"name": "draft-small-k4-0:8 speedup", "unit": "x", "value": 1.84, "extra": "verifier embedded:verifier;
draft draft-small (embedded:draft-small); k 4; slice 0:8; device cpu; dtype float32"}``. A metric a case does
not report (None, or not finite) is left out; a baseline case reports no speedup or acceptance.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from specperf.errors import SpecperfError

Info = Mapping[str, Any]
# (extra_info key, label with unit) for the compare table.
COMPARE_METRICS = (
    ("speedup", "speedup (x)"),
    ("acceptance_aggregate", "acceptance"),
    ("mean_accepted_length", "tokens/verifier call"),
    ("latency_p50", "latency p50 (s/tok)"),
    ("latency_p95", "latency p95 (s/tok)"),
    ("throughput_p50", "throughput p50 (tok/s)"),
)
# (extra_info key, unit) per github-action-benchmark tool.
BIGGER_IS_BETTER = (("speedup", "x"), ("throughput_p50", "tok/s"), ("acceptance_aggregate", "fraction"),
                    ("alpha", "fraction"), ("mean_accepted_length", "tokens/call"))
SMALLER_IS_BETTER = (("latency_p50", "s/token"), ("latency_p95", "s/token"), ("ttft_p50", "s"))
SMALLER_SUFFIX = ".smaller.json"

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


# =========================================================================== the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``specperf`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="specperf", description="Reports and regression checks for specperf "
                                     "benchmark runs (pytest perf/ --benchmark-json=FILE).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser("report", help="write tables, plots and report.md from a benchmark JSON file")
    report.add_argument("bench_json", metavar="BENCH.json", type=Path, help="a --benchmark-json file")
    report.add_argument("--out", metavar="DIR", type=Path, default=Path("outputs"),
                        help="output directory (default: outputs/)")
    compare = commands.add_parser("compare", help="compare two benchmark JSON files; exit 1 on a regression")
    compare.add_argument("old", metavar="OLD", type=Path, nargs="+",
                         help="the reference run(s): --benchmark-json files or folders of them (e.g. main's last "
                              "runs); several let the timing gate measure how much whole runs drift")
    compare.add_argument("new", metavar="NEW.json", type=Path, help="the run to check")
    compare.add_argument("--thresholds", metavar="PATH", type=Path, default=None,
                         help="thresholds YAML merged over the suite's inline thresholds")
    compare.add_argument("--config", metavar="PATH", type=Path, default=None,
                         help="the suite YAML whose thresholds apply (default: the packaged embedded suite)")
    compare.add_argument("--format", choices=("text", "github"), default="text",
                         help="text: aligned table; github: github-action-benchmark JSON (default: text)")
    compare.add_argument("--output", metavar="FILE", type=Path, default=None,
                         help="write there instead of stdout (github: smaller-is-better metrics go to FILE "
                              f"with suffix {SMALLER_SUFFIX})")
    merge = commands.add_parser("merge", help="merge the shards of one run (--specperf-shard I/N) into one file")
    merge.add_argument("shards", metavar="SHARD.json", type=Path, nargs="+", help="every shard's --benchmark-json")
    merge.add_argument("-o", "--output", metavar="FILE", type=Path, required=True, help="the merged JSON file")
    kind = commands.add_parser("machine-kind", help="print the kind of machine a benchmark JSON file ran on, as a "
                               "cache-key fragment")
    kind.add_argument("bench_json", metavar="BENCH.json", type=Path, help="a --benchmark-json file")
    return parser


# =========================================================================== report


def _run_report(args: argparse.Namespace) -> int:
    from specperf.output.report import report_from_json

    path = report_from_json(args.bench_json, args.out)
    sys.stdout.write(f"{path}\n")
    return EXIT_OK


def _run_merge(args: argparse.Namespace) -> int:
    from specperf.output.files import atomic_write
    from specperf.output.merge import merge_runs

    merged = merge_runs(args.shards)  # every check first: a refused merge writes nothing
    atomic_write(args.output, json.dumps(merged, indent=4) + "\n")
    sys.stdout.write(f"{args.output}\n")
    return EXIT_OK


def _run_machine_kind(args: argparse.Namespace) -> int:
    from specperf.errors import ConfigError
    from specperf.output.benchfile import load_bench_json, machine_key, machine_kind

    kind = machine_kind(load_bench_json(args.bench_json).machine_info)
    if "torch" not in kind:  # without it every such file would share one key
        raise ConfigError(f"{args.bench_json} records no kind of machine (no machine_info.specperf.torch); fix: pass "
                          "a file written by `pytest perf/ --benchmark-json=FILE` with this version of specperf")
    sys.stdout.write(machine_key(kind) + "\n")
    return EXIT_OK


# =========================================================================== compare: the table


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "-"
    relative = f" ({(new - old) / abs(old):+.1%})" if old else ""
    return f"{new - old:+.4g}{relative}"


def compare_rows(old: Mapping[str, Info], new: Mapping[str, Info]) -> list[list[str]]:
    """Rows of [case, metric, old, new, change] for the cases in both runs; a metric neither reports is left out."""
    rows = []
    for case_id in (c for c in new if c in old):
        for key, label in COMPARE_METRICS:
            before, after = _number(old[case_id].get(key)), _number(new[case_id].get(key))
            if before is None and after is None:
                continue
            rows.append([case_id, label, "-" if before is None else f"{before:.4g}",
                         "-" if after is None else f"{after:.4g}", _change(before, after)])
    return rows


def _aligned(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    # Text columns left, numbers right, so decimal points roughly line up.

    def just(i: int, cell: str) -> str:
        return cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])

    return ["  ".join(just(i, c) for i, c in enumerate(row)).rstrip() for row in [list(header), *rows]]


def compare_text(old: Mapping[str, Info], new: Mapping[str, Info], old_name: str, new_name: str,
                 errored: Sequence[str] = ()) -> str:
    """The aligned text table, then the added and removed cases, and NEW's ``errored`` cases (no metrics)."""
    lines = [f"specperf compare: {old_name} (old) -> {new_name} (new)", ""]
    rows = compare_rows(old, new)
    lines += _aligned(["case", "metric", "old", "new", "change"], rows) if rows else ["no case in both runs"]
    added = [c for c in new if c not in old]
    removed = [c for c in old if c not in new and c not in errored]
    if added:
        lines += ["", f"added (only in {new_name}): {', '.join(added)}"]
    if removed:
        lines += ["", f"removed (only in {old_name}): {', '.join(removed)}"]
    if errored:
        lines += ["", f"errored (in {new_name}, no metrics: not compared): {', '.join(errored)}"]
    return "\n".join(lines) + "\n"


# =========================================================================== compare: github-action-benchmark


def _extra(info: Info) -> str:
    parts = [f"verifier {info.get('verifier')}"]
    if info.get("draft") is not None:
        model = info.get("draft_model")
        parts.append(f"draft {info.get('draft')}" + (f" ({model})" if model else f" ({info.get('drafter')})"))
        parts.append(f"k {info.get('k')}")  # a baseline's k (0) means nothing
    parts += [f"{key} {info.get(key)}" for key in ("slice", "device", "dtype") if info.get(key) is not None]
    return "; ".join(parts)


def github_entries(cases: Mapping[str, Info], metrics: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """github-action-benchmark ``custom*`` entries: one per case and metric that the case reports."""
    entries = []
    for case_id, info in cases.items():
        for key, unit in metrics:
            value = _number(info.get(key))
            if value is not None:
                entries.append({"name": f"{case_id} {key}", "unit": unit, "value": value, "extra": _extra(info)})
    return entries


def smaller_path(output: Path) -> Path:
    """Where the smaller-is-better entries go: ``out.json`` -> ``out.smaller.json``."""
    return output.with_suffix(SMALLER_SUFFIX) if output.suffix else output.with_name(output.name + SMALLER_SUFFIX)


def _write_github(new: Mapping[str, Info], output: Path | None) -> None:
    from specperf.output.files import atomic_write

    bigger = json.dumps(github_entries(new, BIGGER_IS_BETTER), indent=2) + "\n"
    if output is None:
        sys.stdout.write(bigger)
        return
    atomic_write(output, bigger)
    atomic_write(smaller_path(output), json.dumps(github_entries(new, SMALLER_IS_BETTER), indent=2) + "\n")


# =========================================================================== compare: the gates


def _thresholds(args: argparse.Namespace, new: Mapping[str, Info]) -> Any:
    from specperf.config import DEFAULT_CONFIG_PATH, apply_thresholds_file, load_config

    path = args.config or DEFAULT_CONFIG_PATH
    suite = load_config(path)
    if args.thresholds is not None:
        suite = apply_thresholds_file(suite, args.thresholds)
    verifiers = {str(info.get("verifier")) for info in new.values() if info.get("verifier")}
    if verifiers and suite.verifier not in verifiers:
        # Per-draft floors are looked up by draft name: the wrong suite silently applies only its defaults.
        sys.stderr.write(f"specperf compare: note: thresholds come from {path} (verifier {suite.verifier}), but "
                         f"{args.new} ran verifier {', '.join(sorted(verifiers))}; pass --config with the suite "
                         "that run used\n")
    return suite.thresholds


def gate_messages(old: Mapping[str, Sequence[Info]], new: Mapping[str, Info], thresholds: Any) -> list[str]:
    """Every violated gate of NEW's draft cases, by :func:`specperf.analysis.gates.evaluate` (the plugin's rules).

    ``old`` maps a case id to its extra_info in each baseline run, oldest first."""
    from specperf.analysis.gates import evaluate
    from specperf.errors import ConfigError

    messages = []
    n_cases = sum(info.get("draft") is not None and case_id in old for case_id, info in new.items())
    for case_id, info in new.items():
        if info.get("draft") is None:
            continue
        try:
            violations = evaluate(case_id, str(info["draft"]), info, old.get(case_id), thresholds,
                                  n_cases=n_cases)
        except (TypeError, ValueError) as exc:  # a hand-edited file with a string where a number belongs
            raise ConfigError(f"case {case_id}: a gated metric is not a number ({exc}); fix: compare files "
                              "written by `pytest perf/ --benchmark-json=FILE`") from None
        messages += [v.message() for v in violations]
    return messages


_MACHINE_FIX = ("compare runs of one kind of machine: restore main's runs recorded on NEW's kind (CI keys its "
                "baseline cache with `specperf machine-kind NEW.json`), or record the reference again on this kind")


def _load_pair(args: argparse.Namespace) -> tuple[dict[str, list[Any]], Any]:
    """OLD's cases (each with its runs, oldest first) and NEW's run; a ConfigError when they share no case NEW would
    be gated on (another suite's file), or when an OLD run comes from another kind of machine."""
    from specperf.output.benchfile import (
        baseline_history,
        load_bench_json,
        machine_kind,
        read_baseline,
        require_same_machine,
    )

    new_run = load_bench_json(args.new, role="NEW file")
    gated = [c for c, info in new_run.cases.items() if info.get("draft") is not None] or list(new_run.cases)
    runs = read_baseline(args.old, gated, role="OLD file", other=f"NEW file {args.new}",
                         fix="compare two runs of the same suite (same drafts, k and slices)")
    require_same_machine(machine_kind(new_run.machine_info), runs, here=f"NEW file {args.new}", fix=_MACHINE_FIX)
    return baseline_history(runs), new_run


def _run_compare(args: argparse.Namespace) -> int:
    from specperf.output.files import atomic_write

    history, new_run = _load_pair(args)
    new, errored = new_run.cases, list(new_run.errored)
    thresholds = _thresholds(args, new)
    messages = gate_messages(history, new, thresholds)  # before writing: a bad value is bad input, with no output
    if args.format == "github":
        _write_github(new, args.output)
    else:
        newest = {case_id: runs[-1] for case_id, runs in history.items()}  # the table shows the newest OLD run
        old_name = str(args.old[0]) if len(args.old) == 1 else f"{len(args.old)} baseline paths (newest run shown)"
        text = compare_text(newest, new, old_name, str(args.new), errored)
        if args.output is not None:
            atomic_write(args.output, text)
        else:
            sys.stdout.write(text)
    n_drafts = sum(info.get("draft") is not None for info in new.values())
    if messages:
        sys.stderr.write(f"specperf compare: {len(messages)} regression(s) in {args.new}:\n")
        sys.stderr.write("".join(f"  {m}\n" for m in messages))
    if errored:
        # Nothing of an errored case was measured or gated: the run cannot pass as if it had none.
        sys.stderr.write(f"specperf compare: {len(errored)} case(s) of {args.new} errored before recording their "
                         f"metrics, so nothing of them was compared or gated: {', '.join(errored)}; fix: read each "
                         "case's error in the log of the pytest run that wrote it, and run it again\n")
    if messages or errored:
        return EXIT_REGRESSION
    sys.stderr.write(f"specperf compare: no regression in {n_drafts} draft case(s)\n")
    return EXIT_OK


# =========================================================================== entry point


def main(argv: list[str] | None = None) -> int:
    """Run the ``specperf`` command line; return the exit code (0 ok, 1 regression, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="specperf: %(levelname)s: %(message)s")
    try:
        run = {"report": _run_report, "compare": _run_compare, "merge": _run_merge,
               "machine-kind": _run_machine_kind}[args.command]
        return run(args)
    except SpecperfError as exc:
        sys.stderr.write(f"specperf: error: {exc}\n")
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. --out or --output in a directory that cannot be written
        sys.stderr.write(f"specperf: error: cannot write {exc.filename or ''} ({exc.strerror or exc}); "
                         "fix: choose a writable path\n")
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
