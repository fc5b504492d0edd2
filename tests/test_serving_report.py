"""specperf.output.serving_report: the serving table, the crossovers, serving.json and the plot from hand-made cases.

Two drafts at concurrency 1, 4 and 16: "small" pays at 1 and stops paying from 4, "lookup" pays at every level;
"small" also ran at 2 requests/s and at 'rinf' (every request at once), where it does not pay.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest

from specperf.analysis.serving import crossover_sentence
from specperf.output.report import write_report
from specperf.output.serving_report import (
    SERVING_COLUMNS,
    CrossoverRow,
    crossovers,
    is_server_case,
    serving_rows,
    serving_table,
    write_serving,
)

NOTE = "http://127.0.0.1:8001/metrics is missing: acceptance from the server's counters is null"
SERVING_FILES = {"serving.md", "serving.csv", "serving.json", "serving_speedup.png"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def server_case(draft: str, k: int, load: str, tpot: float | None, throughput: float | None,
                **extra: Any) -> dict[str, Any]:
    """A server case's extra_info: the twin's TPOT is 10 ms, the speculative server's 10 ms / ``tpot``."""
    concurrency = int(load[1:]) if load.startswith("c") else None
    rate = float(load[1:]) if load.startswith("r") and load != "rinf" else None
    info: dict[str, Any] = {
        "case_id": f"{draft}-k{k}-0:2-{load}", "draft": draft, "k": k, "slice": "0:2", "engine": "server",
        "verifier": "embedded:verifier", "device": "cpu", "load": load, "concurrency": concurrency,
        "request_rate": rate, "ttft_ms_p50": 20.0, "twin_ttft_ms_p50": 18.25, "tpot_ms_p50": 10.0 / (tpot or 1.0),
        "twin_tpot_ms_p50": 10.0, "tpot_ms_p95": 15.125, "itl_ms_p50": 4.0, "chunk_itl_ms_p50": 12.0,
        "tokens_per_chunk_mean": 2.5, "output_tok_s": 300.0, "twin_output_tok_s": 200.0, "tpot_speedup": tpot,
        "throughput_speedup": throughput, "goodput_req_s": 3.25, "slo_attainment": 0.875,
        "server_acceptance_rate": 0.6, "acceptance_aggregate": 0.625, "exact_match_rate": 1.0,
        "server_metrics_note": None,
    }
    info.update(extra)
    return info


def suite() -> dict[str, dict[str, Any]]:
    """Suite order: a baseline, a specperf-engine draft case, then the server cases."""
    infos: list[dict[str, Any]] = [
        {"case_id": "baseline-0:2", "draft": None, "engine": "specperf", "verifier": "embedded:verifier"},
        {"case_id": "small-k3-0:2", "draft": "small", "k": 3, "engine": "specperf", "speedup": 1.5},
        server_case("small", 3, "c1", 1.6, 1.4),
        server_case("small", 3, "c4", 0.9, 1.05),
        server_case("small", 3, "c16", 0.7, 0.8),
        server_case("lookup", 2, "c1", 1.3, 1.2),
        server_case("lookup", 2, "c4", 1.2, 1.1),
        server_case("lookup", 2, "c16", 1.1, None, server_acceptance_rate=None, server_metrics_note=NOTE),
        server_case("small", 3, "r2", 0.95, 0.9),
        server_case("small", 3, "rinf", 0.6, 0.7),
    ]
    return {info["case_id"]: info for info in infos}


SERVER_IDS = [case_id for case_id, info in suite().items() if info["engine"] == "server"]


def read_markdown_rows(lines: list[str]) -> list[dict[str, str]]:
    table = [line for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in table[2:]]


def by_key(rows: list[CrossoverRow]) -> dict[tuple[str, str], CrossoverRow]:
    return {(row.draft, row.axis): row for row in rows}


# =========================================================================== the table


def test_only_server_cases_are_server_cases() -> None:
    assert [case_id for case_id, info in suite().items() if is_server_case(info)] == SERVER_IDS


def test_rows_are_the_server_cases_in_suite_order_at_full_precision() -> None:
    header, rows = serving_rows(suite())
    assert header == [col.title for col in SERVING_COLUMNS]
    assert [row[0] for row in rows] == SERVER_IDS
    small_c4 = dict(zip(header, rows[1]))
    assert small_c4["load"] == "c4"
    assert small_c4["TPOT p50 spec (ms)"] == pytest.approx(10.0 / 0.9, rel=1e-15)
    assert small_c4["TPOT speedup (x)"] == 0.9
    assert small_c4["acceptance (/metrics)"] == 0.6 and small_c4["acceptance (audit)"] == 0.625


def test_markdown_formats_numbers_with_units_and_dashes_for_none() -> None:
    lines = serving_table(suite())
    assert all(unit in lines[0] for unit in ("TTFT p50 spec (ms)", "ITL p50 (ms/tok)", "output spec (tok/s)",
                                             "TPOT speedup (x)", "goodput (req/s)"))
    rows = {row["case"]: row for row in read_markdown_rows(lines)}
    assert list(rows) == SERVER_IDS
    small_c4 = rows["small-k3-0:2-c4"]
    assert small_c4["TPOT p50 spec (ms)"] == "11.11" and small_c4["TPOT p50 twin (ms)"] == "10.00"
    assert small_c4["TTFT p50 twin (ms)"] == "18.2" and small_c4["TPOT p95 spec (ms)"] == "15.12"
    assert small_c4["output spec (tok/s)"] == "300.0" and small_c4["tokens / chunk"] == "2.50"
    assert small_c4["TPOT speedup (x)"] == "0.90" and small_c4["throughput speedup (x)"] == "1.05"
    assert small_c4["SLO attainment"] == "0.875" and small_c4["exact match vs twin"] == "1.000"
    lookup_c16 = rows["lookup-k2-0:2-c16"]
    assert lookup_c16["throughput speedup (x)"] == "-" and lookup_c16["acceptance (/metrics)"] == "-"
    assert lookup_c16["acceptance (audit)"] == "0.625"
    assert rows["small-k3-0:2-rinf"]["load"] == "rinf"


def test_no_server_case_no_table() -> None:
    cases = {c: info for c, info in suite().items() if info["engine"] != "server"}
    assert serving_table(cases) == []
    assert serving_rows(cases)[1] == []
    assert crossovers(cases) == []


# =========================================================================== the crossovers


def test_crossover_per_draft_and_axis() -> None:
    rows = crossovers(suite())
    assert [(row.draft, row.k, row.slice, row.axis) for row in rows] == [
        ("small", 3, "0:2", "concurrency"), ("lookup", 2, "0:2", "concurrency"), ("small", 3, "0:2", "rate")]
    found = by_key(rows)
    small, lookup, rate = found["small", "concurrency"], found["lookup", "concurrency"], found["small", "rate"]
    assert small.loads == (1.0, 4.0, 16.0) and small.tpot_speedups == (1.6, 0.9, 0.7)
    assert small.throughput_speedups == (1.4, 1.05, 0.8)
    assert small.crossover == 4.0
    assert lookup.crossover is None and lookup.throughput_speedups == (1.2, 1.1, None)
    assert rate.loads == (2.0, float("inf")) and rate.crossover == 2.0


def test_sentences_come_from_the_analysis() -> None:
    found = by_key(crossovers(suite()))
    small = found["small", "concurrency"]
    levels = list(zip(small.loads, small.tpot_speedups))
    assert small.sentence == crossover_sentence("small k=3", "concurrency", levels, "TPOT speedup")
    assert small.sentence.startswith("small k=3: speculation pays up to concurrency 1")
    lookup = found["lookup", "concurrency"]
    assert lookup.sentence == crossover_sentence("lookup k=2", "concurrency",
                                                 list(zip(lookup.loads, lookup.tpot_speedups)), "TPOT speedup")
    assert small.sentence != lookup.sentence
    rate = found["small", "rate"]
    assert rate.sentence == crossover_sentence("small k=3", "request_rate", [(2.0, 0.95), (float("inf"), 0.6)],
                                               "TPOT speedup")
    assert "req/s" in rate.sentence
    assert all(row.sentence for row in found.values())


def test_crossover_rows_are_frozen() -> None:
    row = crossovers(suite())[0]
    with pytest.raises(AttributeError):
        row.crossover = 1.0  # type: ignore[misc]


# =========================================================================== the files


def test_write_serving_writes_every_file(tmp_path: Path) -> None:
    section = write_serving(suite(), tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == SERVING_FILES
    assert (tmp_path / "serving_speedup.png").read_bytes()[:8] == PNG_SIGNATURE
    assert section[0] == "## Serving under load"
    for row in crossovers(suite()):
        assert f"- {row.sentence}" in section
    assert "![Speedup under load](serving_speedup.png)" in section
    assert any("[serving.csv](serving.csv)" in line and "[serving.json](serving.json)" in line for line in section)
    assert serving_table(suite())[0] in section
    assert f"> Note: {NOTE}." in section
    markdown = (tmp_path / "serving.md").read_text()
    assert markdown.startswith("# Serving under load") and serving_table(suite())[2] in markdown


def test_serving_json_holds_the_crossovers(tmp_path: Path) -> None:
    write_serving(suite(), tmp_path)
    data = json.loads((tmp_path / "serving.json").read_text())
    entries = {(e["draft"], e["axis"]): e for e in data["crossovers"]}
    assert list(data) == ["crossovers"] and len(entries) == 3
    small = entries["small", "concurrency"]
    assert small == {"draft": "small", "k": 3, "slice": "0:2", "axis": "concurrency", "loads": [1, 4, 16],
                     "tpot_speedup": [1.6, 0.9, 0.7], "throughput_speedup": [1.4, 1.05, 0.8],
                     "crossover_concurrency": 4, "sentence": by_key(crossovers(suite()))["small", "concurrency"]
                     .sentence}
    assert entries["lookup", "concurrency"]["crossover_concurrency"] is None
    rate = entries["small", "rate"]
    assert rate["loads"] == [2, "inf"] and rate["crossover_rate"] == 2 and "crossover_concurrency" not in rate


def test_serving_csv_is_full_precision(tmp_path: Path) -> None:
    write_serving(suite(), tmp_path)
    with open(tmp_path / "serving.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == SERVER_IDS
    assert float(rows[1]["TPOT p50 spec (ms)"]) == 10.0 / 0.9
    assert rows[5]["throughput speedup (x)"] == "" and rows[5]["acceptance (/metrics)"] == ""


def test_plot_has_a_panel_per_axis_and_the_paying_line() -> None:
    from specperf.output.serving_report import PAYING_LABEL, plot_serving_speedup

    fig = plot_serving_speedup(suite())
    assert not isinstance(fig, str)
    concurrency, rate = fig.axes
    assert concurrency.get_xscale() == "log" and "concurrency" in concurrency.get_xlabel()
    assert "requests/s" in rate.get_xlabel()
    labels = [line.get_label() for line in concurrency.get_lines()]
    assert PAYING_LABEL in labels and "small k=3 TPOT speedup" in labels
    styles = {line.get_label(): line.get_linestyle() for line in concurrency.get_lines()}
    assert styles["small k=3 TPOT speedup"] == "-" and styles["small k=3 throughput speedup"] == "--"
    colours = {line.get_label(): line.get_color() for line in concurrency.get_lines()}
    assert colours["small k=3 TPOT speedup"] == colours["small k=3 throughput speedup"]
    assert colours["small k=3 TPOT speedup"] != colours["lookup k=2 TPOT speedup"]
    assert [t.get_text() for t in rate.get_xticklabels()] == ["2", "inf"]


def test_concurrency_only_run_has_one_panel() -> None:
    from specperf.output.serving_report import plot_serving_speedup

    cases = {c: info for c, info in suite().items() if info.get("concurrency") is not None}
    fig = plot_serving_speedup(cases)
    assert not isinstance(fig, str) and len(fig.axes) == 1


def test_no_server_case_writes_nothing(tmp_path: Path) -> None:
    cases = {c: info for c, info in suite().items() if info["engine"] != "server"}
    assert write_serving(cases, tmp_path / "out") == []
    assert not (tmp_path / "out").exists()


def test_write_report_without_server_cases_writes_no_serving_files(tmp_path: Path) -> None:
    cases = {c: info for c, info in suite().items() if info["engine"] != "server"}
    write_report(cases, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "report.md" in names and not names & SERVING_FILES
    assert "Serving under load" not in (tmp_path / "report.md").read_text()


def test_write_report_puts_serving_after_the_tables(tmp_path: Path) -> None:
    write_report(suite(), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names >= SERVING_FILES
    assert not [name for name in names if name.endswith(".tmp")]
    text = (tmp_path / "report.md").read_text()
    assert text.index("## Speculative decoding against theory") < text.index("## Serving under load") \
        < text.index("## Plots")
    assert "](serving_speedup.png)" in text and "](serving.json)" in text


def test_a_failed_write_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def fail_on_json(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith("serving.json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_json)
    with pytest.raises(OSError, match="disk full"):
        write_serving(suite(), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "serving.json" not in names and not [name for name in names if name.endswith(".tmp")]
