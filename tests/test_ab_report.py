"""specperf.output.ab_report: the A/B table, ab.md, ab.csv and ab.png from hand-built AbResult values."""

from __future__ import annotations

import csv
import dataclasses
import errno
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from specperf.analysis.ab import AbResult, WorkDifference
from specperf.output.ab_report import RATIO_LABEL, ab_figure, ab_markdown, ab_table, plot_ab, write_ab_report

CONF = 0.99875  # 1 - 0.05 / (10 tests x 4 looks)


def result(case_id: str, metric: str, n: int, a: float, b: float, ratio: float, low: float, high: float,
           decision: Any, direction: Any = None, p: float = 0.5) -> AbResult:
    return AbResult(case_id, metric, n, a, b, ratio, low, high, decision, direction, CONF, 0.02, p)


# Given out of order: the table sorts by case id, then wall before speedup.
RESULTS = (
    result("case-b", "speedup", 12, 2.0, 1.9, 0.952, 0.94, 0.965, "DIFFERENT", "slower", 0.0005),
    result("case-c", "wall", 3, 0.25, 0.2, 0.8, 0.0, math.inf, "UNKNOWN", p=1.0),  # too few pairs: 0 .. inf
    result("case-b", "wall", 12, 1.25, 1.3127, 1.05, 1.031, 1.07, "DIFFERENT", "slower", 0.0005),
    result("case-a", "speedup", 18, 1.5, 1.8, 1.2, 1.1, 1.3, "DIFFERENT", "faster", 0.001),
    result("case-a", "wall", 18, 0.5, 0.5005, 1.001, 0.995, 1.006, "SAME", p=0.7),
)
TABLE = [
    "| case   | metric  | A median | B median | ratio B/A | interval         | decision         | pairs |",
    "| ------ | ------- | -------- | -------- | --------- | ---------------- | ---------------- | ----- |",
    "| case-a | wall    | 0.5000 s | 0.5005 s | 1.0010    | [0.9950, 1.0060] | SAME             | 18    |",
    "| case-a | speedup | 1.500x   | 1.800x   | 1.2000    | [1.1000, 1.3000] | DIFFERENT faster | 18    |",
    "| case-b | wall    | 1.250 s  | 1.313 s  | 1.0500    | [1.0310, 1.0700] | DIFFERENT slower | 12    |",
    "| case-b | speedup | 2.000x   | 1.900x   | 0.9520    | [0.9400, 0.9650] | DIFFERENT slower | 12    |",
    "| case-c | wall    | 0.2500 s | 0.2000 s | 0.8000    | [0.0000, inf]    | UNKNOWN          | 3     |",
]
ORDER = [("case-a", "wall"), ("case-a", "speedup"), ("case-b", "wall"), ("case-b", "speedup"), ("case-c", "wall")]
DIFFS = (WorkDifference("case-b", 0, "tokens", [5, 6, 7], [5, 6, 8]), WorkDifference("case-c", None, "requests", 4, 3))
LABELS = dict(a_label="main@0123abcd", b_label="work tree (dirty)")


def report(out_dir: Path, results: tuple[AbResult, ...] = RESULTS, **changes: Any) -> Path:
    kwargs: dict[str, Any] = dict(LABELS, grain="alternate", min_effect=0.02, notes=["timing only on sampled cases"])
    return write_ab_report(results, DIFFS, out_dir, **{**kwargs, **changes})


def sections(text: str) -> dict[str, list[str]]:
    """'## heading' -> its lines; the part above the first heading under ''."""
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:]
            found[current] = []
        else:
            found[current].append(line)
    return found


# =========================================================================== the table


def test_table_rows_and_columns_exactly() -> None:
    assert ab_table(RESULTS) == TABLE


def test_table_without_results_is_its_header() -> None:
    assert ab_table([]) == ["| case | metric | A median | B median | ratio B/A | interval | decision | pairs |",
                            "| ---- | ------ | -------- | -------- | --------- | -------- | -------- | ----- |"]


def test_a_pipe_in_a_case_id_keeps_the_columns() -> None:
    lines = ab_table([dataclasses.replace(RESULTS[0], case_id="test[a|b]")])
    assert lines[2].startswith("| test[a\\|b] | speedup |")
    assert lines[2].replace("\\|", "").count("|") == 9


# =========================================================================== ab.md


def test_markdown_names_the_sides_grain_confidence_and_sections() -> None:
    text = ab_markdown(RESULTS, DIFFS, **LABELS, grain="duet", notes=["timing only on sampled cases", "second"])
    parts = sections(text)
    assert list(parts) == ["", "Results", "Work metrics", "Notes"]
    head = "\n".join(parts[""])
    assert head.startswith("# specperf A/B comparison")
    assert "Side A (reference): `main@0123abcd`. Side B: `work tree (dirty)`." in head
    assert "Grain: duet. Each pair is one round of A and one round of B run at the same time" in head
    assert "Confidence: 99.875% per interval" in head and "min effect 2%" in head
    assert [line for line in parts["Results"] if line.startswith("|")] == TABLE
    assert parts["Work metrics"][1:] == [
        "2 differences in deterministic work between the sides (greedy decoding must do the same work on both):", "",
        "- case-b: request 0 tokens differ from position 2 (A [7], B [8]; lengths 3 and 3)",
        "- case-c: requests A 4, B 3", ""]
    assert parts["Notes"] == ["", "- timing only on sampled cases", "- second"]
    assert text.endswith("- second\n")


def test_markdown_says_identical_work_and_leaves_out_empty_notes() -> None:
    parts = sections(ab_markdown(RESULTS, [], **LABELS, grain="alternate", notes=()))
    assert list(parts) == ["", "Results", "Work metrics"]
    assert parts["Work metrics"][1] == ("Deterministic work (tokens, verifier_calls, proposed, accepted, "
                                        "accept_counts) is identical on every case.")
    head = "\n".join(parts[""])
    assert "Grain: alternate. Each pair is one round of A and one round of B run next to each other" in head


def test_markdown_without_results_and_with_a_bad_grain() -> None:
    parts = sections(ab_markdown([], [], **LABELS, grain="alternate", notes=()))
    assert parts["Results"] == ["", "_No case was compared._", ""]
    assert not any("Confidence" in line for line in parts[""])
    with pytest.raises(ValueError, match="grain must be one of"):
        ab_markdown(RESULTS, [], **LABELS, grain="run", notes=())


# =========================================================================== ab.csv, ab.png and the directory


def test_report_writes_three_files_and_links_them(tmp_path: Path) -> None:
    path = report(tmp_path / "ab")
    assert path == tmp_path / "ab" / "ab.md"
    assert sorted(p.name for p in path.parent.iterdir()) == ["ab.csv", "ab.md", "ab.png"]
    parts = sections(path.read_text())
    assert list(parts) == ["", "Results", "Work metrics", "Notes", "Plot"]
    assert "![B / A per case and metric](ab.png)" in parts["Plot"] and "CSV: [ab.csv](ab.csv)" in parts["Plot"]


def test_csv_holds_every_field_at_full_precision(tmp_path: Path) -> None:
    with open(report(tmp_path).parent / "ab.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["case_id", "metric", "n_rounds", "a_median", "b_median", "ratio", "low", "high", "decision",
                       "direction", "confidence", "min_effect", "p_value"]
    assert [(row[0], row[1]) for row in rows[1:]] == ORDER
    assert rows[3] == ["case-b", "wall", "12", "1.25", "1.3127", "1.05", "1.031", "1.07", "DIFFERENT", "slower",
                       "0.99875", "0.02", "0.0005"]
    assert rows[5] == ["case-c", "wall", "3", "0.25", "0.2", "0.8", "0.0", "inf", "UNKNOWN", "", "0.99875", "0.02",
                       "1.0"]
    by_key = {(r.case_id, r.metric): r for r in RESULTS}
    for row in rows[1:]:
        expected = by_key[(row[0], row[1])]
        assert float(row[3]) == expected.a_median and float(row[7]) == expected.high  # repr round-trips


def test_png_exists_decodes_and_is_not_blank(tmp_path: Path) -> None:
    import matplotlib.image

    path = plot_ab(RESULTS, tmp_path / "forest.png", min_effect=0.02)
    assert path == tmp_path / "forest.png" and path.stat().st_size > 0
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= 300 and pixels.shape[1] >= 600
    assert pixels[..., :3].std() > 0.02
    assert (report(tmp_path / "ab").parent / "ab.png").stat().st_size > 0


def test_forest_plot_panels_lines_labels_and_colours() -> None:
    from matplotlib.colors import to_rgba

    fig = ab_figure(RESULTS, min_effect=0.05)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["wall (s): lower is better", "speedup (x): higher is better"]
    for ax in axes:
        assert ax.get_xlabel() == RATIO_LABEL and "(" in RATIO_LABEL
        # axvline spans the axes: y data 0 .. 1 in axes coordinates; the intervals are horizontal, the points single.
        verticals = [(line.get_xdata()[0], line.get_linestyle()) for line in ax.lines
                     if list(line.get_ydata()) == [0, 1]]
        assert sorted(verticals) == [(pytest.approx(1 / 1.05), "--"), (1.0, "-"), (pytest.approx(1.05), "--")]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["case-a", "case-b", "case-c"]
    assert "(" in axes[0].get_ylabel()
    points = {(ax.get_title().split()[0], round(float(line.get_xdata()[0]), 4)): line.get_color()
              for ax in axes for line in ax.lines if line.get_marker() == "o"}
    assert to_rgba(points[("wall", 1.05)]) == to_rgba("tab:red")  # DIFFERENT slower
    assert to_rgba(points[("speedup", 1.2)]) == to_rgba("tab:green")  # DIFFERENT faster
    assert to_rgba(points[("wall", 1.001)]) == to_rgba("tab:blue")  # SAME
    assert to_rgba(points[("wall", 0.8)]) == to_rgba("tab:gray")  # UNKNOWN
    assert fig.legends[0].get_texts()[0].get_text() == "DIFFERENT slower"


def test_report_without_results_skips_the_plot(tmp_path: Path) -> None:
    path = report(tmp_path, results=())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ab.csv", "ab.md"]
    assert "_Skipped: no case was compared._" in sections(path.read_text())["Plot"]
    assert (tmp_path / "ab.csv").read_text().count("\n") == 1
    with pytest.raises(ValueError, match="no A/B result"):
        plot_ab([], tmp_path / "x.png", min_effect=0.02)


# =========================================================================== never half-written


def test_an_unwritable_directory_gets_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ab"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):  # root ignores the mode: refuse as the kernel refuses anyone else
            real = tempfile.mkstemp

            def refuse(*args: Any, dir: Any = None, **kwargs: Any) -> tuple[int, str]:
                if dir is not None and Path(dir) == out:
                    raise PermissionError(errno.EACCES, "Permission denied", str(out))
                return real(*args, dir=dir, **kwargs)

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(PermissionError):
            report(out)
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


def test_a_failed_write_keeps_the_earlier_report_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = report(tmp_path).read_text()
    real = os.replace

    def fail_md(src: Any, dst: Any) -> None:
        if Path(dst).name == "ab.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_md)
    with pytest.raises(OSError, match="No space"):
        report(tmp_path, results=RESULTS[:2], notes=["a later run"])
    assert (tmp_path / "ab.md").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ab.csv", "ab.md", "ab.png"]  # no temporary file left


def test_bad_arguments_fail_before_the_first_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grain"):
        report(tmp_path / "ab", grain="run")
    assert not (tmp_path / "ab").exists()
