"""specperf.output.report: tables (markdown and CSV), plots and report.md from a real --benchmark-json run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from specperf.errors import ConfigError
from specperf.output.report import PLOTS, load_bench_json, report_from_json, write_report, write_summary
from tests.helpers import CASE_IDS, load_cases

# CSV/markdown column -> (extra_info key, markdown rounding tolerance). None: the baseline's speedup, 1.0.
PERFORMANCE = {"latency p50 (s/tok)": ("latency_p50", 5e-6), "latency p95 (s/tok)": ("latency_p95", 5e-6),
               "throughput p50 (tok/s)": ("throughput_p50", 0.05), "throughput p95 (tok/s)": ("throughput_p95", 0.05),
               "speedup (x)": ("speedup", 0.005)}
ACCEPTANCE = {"samples": ("n_requests", 0), "acceptance mean": ("acceptance_mean", 5e-4),
              "acceptance p50": ("acceptance_p50", 5e-4), "acceptance p95": ("acceptance_p95", 5e-4),
              "agreement (alpha)": ("alpha", 5e-4), "tokens / verifier call": ("mean_accepted_length", 0.005)}
THEORY = {"mean accepted length (tok/call)": ("mean_accepted_length", 0.005),
          "expected speedup (x)": ("expected_speedup", 0.005), "efficiency vs theory": ("efficiency", 0.005),
          "exact match rate": ("exact_match_rate", 5e-4), "TTFT p50 (s)": ("ttft_p50", 5e-5)}
TABLES = {"performance": PERFORMANCE, "acceptance": ACCEPTANCE, "theory": THEORY}


@pytest.fixture(scope="module")
def report_dir(bench_json: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("report")
    assert report_from_json(bench_json, out) == out / "report.md"
    return out


def expected(info: dict[str, Any], key: str) -> Any:
    if key == "speedup" and info.get("draft") is None:
        return 1.0
    return info[key]


def read_markdown_table(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.mark.slow
def test_every_file_is_written(report_dir: Path) -> None:
    names = {p.name for p in report_dir.iterdir()}
    tables = {f"{stem}.{ext}" for stem in TABLES for ext in ("md", "csv")}
    plots = {f"{spec.stem}.png" for spec in PLOTS}
    # The real run reports every metric, so no plot is skipped.
    assert tables | plots | {"report.md"} == names
    assert not [n for n in names if n.endswith(".tmp")]


@pytest.mark.slow
def test_plots_decode_and_are_not_blank(report_dir: Path) -> None:
    import matplotlib.image

    for spec in PLOTS:
        pixels = matplotlib.image.imread(report_dir / f"{spec.stem}.png")
        assert pixels.ndim == 3 and pixels.shape[0] >= 400 and pixels.shape[1] >= 600, spec.stem
        assert pixels[..., :3].std() > 0.02, f"{spec.stem}.png looks blank"


@pytest.mark.slow
@pytest.mark.parametrize("stem", list(TABLES))
def test_csv_numbers_equal_the_json(report_dir: Path, bench_json: Path, stem: str) -> None:  # noqa: F811
    cases = load_cases(bench_json)
    with open(report_dir / f"{stem}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    drafts = [c for c in CASE_IDS if cases[c]["draft"] is not None]
    assert [r["case"] for r in rows] == (list(cases) if stem == "performance" else
                                         [c for c in cases if c in drafts])
    for row in rows:
        info = cases[row["case"]]
        for column, (key, _) in TABLES[stem].items():
            want = expected(info, key)
            assert (row[column] == "") == (want is None), (row["case"], column)
            if want is not None:
                assert float(row[column]) == pytest.approx(want, rel=1e-12), (row["case"], column)


@pytest.mark.slow
@pytest.mark.parametrize("stem", list(TABLES))
def test_markdown_numbers_equal_the_json(report_dir: Path, bench_json: Path, stem: str) -> None:  # noqa: F811
    cases = load_cases(bench_json)
    for row in read_markdown_table(report_dir / f"{stem}.md"):
        info = cases[row["case"]]
        for column, (key, tolerance) in TABLES[stem].items():
            want = expected(info, key)
            if want is None:
                assert row[column] == "-"
            else:
                assert float(row[column]) == pytest.approx(want, abs=tolerance * 1.0001), (row["case"], column)


@pytest.mark.slow
def test_report_md_links_tables_plots_and_environment(report_dir: Path, bench_json: Path) -> None:  # noqa: F811
    text = (report_dir / "report.md").read_text()
    data = json.loads(bench_json.read_text())
    for spec in PLOTS:
        assert f"]({spec.stem}.png)" in text  # relative links: readable in the artifact and on GitHub
    for stem in TABLES:
        assert f"]({stem}.csv)" in text
    assert text.index("## Performance per case") < text.index("## Plots") < text.index("## Environment")
    assert data["machine_info"]["python_version"] in text
    assert data["machine_info"]["specperf"]["torch"] in text
    assert "embedded:verifier" in text and "0:2" in text


@pytest.mark.slow
def test_plot_axes_name_units_and_titles_name_the_run(bench_json: Path) -> None:  # noqa: F811
    cases = load_cases(bench_json)
    for spec in PLOTS:
        fig = spec.make(cases)
        assert not isinstance(fig, str), f"{spec.stem} skipped: {fig}"
        ax = fig.axes[0]
        assert "(" in ax.get_xlabel() and "(" in ax.get_ylabel(), spec.stem
        assert all(word in ax.get_title() for word in ("embedded:verifier", "cpu", "0:2")), spec.stem


@pytest.mark.slow
def test_a_plot_without_data_is_skipped_and_said_so(bench_json: Path, tmp_path: Path) -> None:  # noqa: F811
    cases = {c: {**info, "position_acceptance": None} for c, info in load_cases(bench_json).items()}
    write_report(cases, tmp_path)
    assert not (tmp_path / "position_acceptance.png").exists()
    assert (tmp_path / "speedup.png").exists()
    text = (tmp_path / "report.md").read_text()
    assert "position_acceptance.png`): skipped, no draft case reports position_acceptance" in text


@pytest.mark.slow
def test_a_baseline_only_run_reports_timing(bench_json: Path, tmp_path: Path) -> None:  # noqa: F811
    cases = {c: info for c, info in load_cases(bench_json).items() if info["draft"] is None}
    write_report(cases, tmp_path)
    assert {p.name for p in tmp_path.glob("*.png")} == {"latency.png", "throughput.png", "throughput_vs_batch.png",
                                                       "time_breakdown.png"}
    assert "_No draft cases in this run._" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_summary_still_written(bench_json: Path, tmp_path: Path) -> None:  # noqa: F811
    text = write_summary(load_cases(bench_json), tmp_path).read_text()
    assert "small-k2-0:2" in text and "Acceptance per draft" in text


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    ('{"machine_info": {}}', "no 'benchmarks' list"),
    ('{"benchmarks": [{"name": "x", "extra_info": {}}]}', "holds no specperf cases"),
])
def test_bad_files_are_config_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        report_from_json(path, tmp_path / "out")
    assert str(path) in str(info.value) and "fix:" in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_entries_without_case_id_are_skipped(bench_json: Path, tmp_path: Path) -> None:  # noqa: F811
    data = json.loads(bench_json.read_text())
    data["benchmarks"].append({"name": "test_other", "extra_info": {}})
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(data))
    assert set(load_bench_json(path).cases) == set(CASE_IDS)
