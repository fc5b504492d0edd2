"""The specperf command line: report, compare (exit codes, gates, added/removed cases, kinds of machine, errored
cases), --format github, machine-kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from specperf.cli import BIGGER_IS_BETTER, SMALLER_IS_BETTER, main
from tests.helpers import CASE_IDS, edit_case

Capture = pytest.CaptureFixture[str]


def compare(capsys: Capture, old: Path, new: Path, *args: str) -> tuple[int, str, str]:
    code = main(["compare", str(old), str(new), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_is_registered() -> None:
    (script,) = entry_points(group="console_scripts", name="specperf")
    assert script.value == "specperf.cli:main"


@pytest.mark.slow
def test_report_prints_the_report_path(bench_json: Path, tmp_path: Path, capsys: Capture) -> None:
    assert main(["report", str(bench_json), "--out", str(tmp_path / "out")]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "out" / "report.md" and path.is_file()


@pytest.mark.slow
def test_identical_runs_pass(bench_json: Path, bench_suite: Path, capsys: Capture) -> None:
    code, out, err = compare(capsys, bench_json, bench_json, "--config", str(bench_suite))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[2].split() == ["case", "metric", "old", "new", "change"]
    for case_id in CASE_IDS:
        assert any(line.startswith(case_id) for line in lines)
    assert "small-k2-0:2" in out and "acceptance" in out and "latency p95 (s/tok)" in out
    assert "added" not in out and "removed" not in out
    assert "no regression in 8 draft case(s)" in err


@pytest.mark.slow
@pytest.mark.parametrize(("edit_old", "delta"), [(True, 0.05), (False, -0.05)])
def test_an_acceptance_drop_fails(bench_json: Path, bench_suite: Path, tmp_path: Path, capsys: Capture,
                                  edit_old: bool, delta: float) -> None:
    edited = edit_case(bench_json, tmp_path / "edited.json", "small-k2-0:2", "acceptance_aggregate", delta)
    old, new = (edited, bench_json) if edit_old else (bench_json, edited)
    code, _, err = compare(capsys, old, new, "--config", str(bench_suite))
    assert code == 1
    assert "small-k2-0:2: acceptance_aggregate regressed" in err
    assert "1 regression(s)" in err


@pytest.mark.slow
def test_cases_in_one_file_only_are_listed(bench_json: Path, bench_suite: Path, tmp_path: Path,
                                           capsys: Capture) -> None:
    data = json.loads(bench_json.read_text())
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["case_id"] != "lookup-k3-0:2"]
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(data))
    code, out, _ = compare(capsys, bench_json, fewer, "--config", str(bench_suite))
    assert code == 0 and "removed (only in" in out and "lookup-k3-0:2" in out.split("removed")[1]
    code, out, _ = compare(capsys, fewer, bench_json, "--config", str(bench_suite))
    assert code == 0 and "added (only in" in out and "lookup-k3-0:2" in out.split("added")[1]


@pytest.mark.slow
def test_thresholds_file_is_merged_over_the_suite(bench_json: Path, bench_suite: Path, tmp_path: Path,
                                                  capsys: Capture) -> None:
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("drafts:\n  small: {min_acceptance: 1.01}\n")
    code, _, err = compare(capsys, bench_json, bench_json, "--config", str(bench_suite), "--thresholds",
                           str(thresholds))
    assert code == 2 and "min_acceptance" in err  # 1.01 is out of range: bad input, not a regression
    thresholds.write_text("drafts:\n  small: {min_speedup: 1000}\n")
    code, _, err = compare(capsys, bench_json, bench_json, "--config", str(bench_suite), "--thresholds",
                           str(thresholds))
    assert code == 1 and "small-k2-0:2: speedup regressed" in err and "min_speedup = 1000" in err
    assert "lookup-k2-0:2" not in err  # the override names one draft only


@pytest.mark.slow
def test_missing_and_malformed_files_exit_2(bench_json: Path, tmp_path: Path, capsys: Capture) -> None:
    code, out, err = compare(capsys, bench_json, tmp_path / "missing.json")
    assert code == 2 and "missing.json does not exist" in err and out == ""
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert compare(capsys, broken, bench_json)[0] == 2
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    code, _, err = compare(capsys, bench_json, bench_json, "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in err


def validate_github(entries: object, metrics: tuple[tuple[str, str], ...]) -> list[dict[str, object]]:
    """The documented shape: a list of {"name": str, "unit": str, "value": float, "extra": str (optional)}."""
    assert isinstance(entries, list) and entries
    units = dict(metrics)
    for entry in entries:
        assert isinstance(entry, dict) and set(entry) <= {"name", "unit", "value", "extra"}
        assert isinstance(entry["name"], str) and isinstance(entry["unit"], str)
        assert isinstance(entry["value"], float) and not isinstance(entry["value"], bool)
        assert isinstance(entry.get("extra", ""), str)
        case_id, metric = entry["name"].rsplit(" ", 1)
        assert case_id in CASE_IDS and units[metric] == entry["unit"]
    return entries


@pytest.mark.slow
def test_github_format_to_stdout(bench_json: Path, bench_suite: Path, capsys: Capture) -> None:
    code, out, _ = compare(capsys, bench_json, bench_json, "--config", str(bench_suite), "--format", "github")
    assert code == 0
    entries = validate_github(json.loads(out), BIGGER_IS_BETTER)
    names = {e["name"] for e in entries}
    assert {"small-k2-0:2 speedup", "lookup-k3-0:2 acceptance_aggregate", "baseline-0:2 throughput_p50"} <= names
    assert "baseline-0:2 speedup" not in names


@pytest.mark.slow
def test_github_format_to_two_files(bench_json: Path, bench_suite: Path, tmp_path: Path,
                                    capsys: Capture) -> None:
    output = tmp_path / "gh" / "bench.json"
    code, out, _ = compare(capsys, bench_json, bench_json, "--config", str(bench_suite), "--format", "github",
                           "--output", str(output))
    assert code == 0 and out == ""
    validate_github(json.loads(output.read_text()), BIGGER_IS_BETTER)
    smaller = validate_github(json.loads((tmp_path / "gh" / "bench.smaller.json").read_text()), SMALLER_IS_BETTER)
    assert {e["name"] for e in smaller} >= {f"{c} latency_p50" for c in CASE_IDS}


@pytest.mark.slow
def test_text_output_file(bench_json: Path, bench_suite: Path, tmp_path: Path, capsys: Capture) -> None:
    output = tmp_path / "compare.txt"
    code, out, _ = compare(capsys, bench_json, bench_json, "--config", str(bench_suite), "--output", str(output))
    assert code == 0 and out == "" and "small-k3-0:2" in output.read_text()



@pytest.mark.slow
def test_default_config_is_the_embedded_suite(bench_json: Path, capsys: Capture) -> None:
    code, _, err = compare(capsys, bench_json, bench_json)
    assert code == 0 and "no regression" in err and "note:" not in err  # same verifier: no mismatch note


def _with_speedup_rounds(src: Path, dst: Path, factor: float, when: str) -> Path:
    """A copy of a run with every case's per-round speedups multiplied by ``factor`` and its datetime set."""
    data = json.loads(src.read_text())
    data["datetime"] = when
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("speedup_rounds"):
            info["speedup_rounds"] = [s * factor for s in info["speedup_rounds"]]
    dst.write_text(json.dumps(data))
    return dst


@pytest.mark.slow
def test_several_baseline_runs_gate_on_their_spread(bench_json: Path, bench_suite: Path, tmp_path: Path,
                                                    capsys: Capture) -> None:
    """OLD may be several runs or a folder: the timing gate then measures how much whole runs drift."""
    runs = tmp_path / "main-runs"
    runs.mkdir()
    for i, factor in enumerate((0.97, 1.0, 1.03, 0.99, 1.01)):
        _with_speedup_rounds(bench_json, runs / f"run{i}.json", factor, f"2026-11-0{i + 1}T00:00:00")
    drifted = _with_speedup_rounds(bench_json, tmp_path / "drifted.json", 0.97, "2026-11-09T00:00:00")
    code, out, err = compare(capsys, runs, drifted, "--config", str(bench_suite))
    assert code == 0, err  # within the drift of main's own runs
    assert "5 baseline paths" not in out and "main-runs" in out
    slow = _with_speedup_rounds(bench_json, tmp_path / "slow.json", 0.70, "2026-11-09T00:00:00")
    (tmp_path / "timing.yaml").write_text("timing:\n  min_effect: 0.05\n")  # the suite's own floor is 0.9
    code = main(["compare", *map(str, sorted(runs.iterdir())), str(slow), "--config", str(bench_suite),
                 "--thresholds", str(tmp_path / "timing.yaml")])
    _, err = capsys.readouterr()
    assert code == 1
    assert "speedup regressed" in err and "5 baseline run(s)" in err and "(baseline runs)" in err


# =========================================================================== kinds of machine, errored cases


def _edited(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))
    return dst


def _on_machine(src: Path, dst: Path, **specperf_info: Any) -> Path:
    """A copy of a run with machine_info.specperf fields replaced (None deletes the field)."""

    def edit(data: dict[str, Any]) -> None:
        info = data["machine_info"]["specperf"]
        for key, value in specperf_info.items():
            if value is None:
                info.pop(key, None)
            else:
                info[key] = value

    return _edited(src, dst, edit)


def _errored(src: Path, dst: Path, case_id: str) -> Path:
    """A copy of a run in which ``case_id`` errored after its timed rounds: its entry holds its case_id alone."""

    def edit(data: dict[str, Any]) -> None:
        for bench in data["benchmarks"]:
            if bench["extra_info"].get("case_id") == case_id:
                bench["extra_info"] = {"case_id": case_id}

    return _edited(src, dst, edit)


@pytest.mark.slow
def test_compare_refuses_baseline_runs_of_another_kind_of_machine(bench_json: Path, bench_suite: Path,
                                                                  tmp_path: Path, capsys: Capture) -> None:
    here = json.loads(bench_json.read_text())["machine_info"]["specperf"]
    runs = tmp_path / "main-runs"
    runs.mkdir()
    _on_machine(bench_json, runs / "a.json")
    other = _on_machine(bench_json, runs / "b.json", gpu="NVIDIA H100 80GB HBM3", transformers="5.19.0")
    code, out, err = compare(capsys, runs, bench_json, "--config", str(bench_suite))
    assert code == 2 and out == ""
    assert "another kind of machine" in err and str(other) in err and str(runs / "a.json") not in err
    assert "gpu 'NVIDIA H100 80GB HBM3' (vs None)" in err
    assert f"transformers '5.19.0' (vs '{here['transformers']}')" in err and "fix:" in err
    # Within one kind the same runs compare; a field an older file does not record is not compared.
    older = _on_machine(bench_json, runs / "b.json", cudnn=None, transformers=None)
    assert compare(capsys, runs, bench_json, "--config", str(bench_suite))[0] == 0
    assert compare(capsys, older, bench_json, "--config", str(bench_suite))[0] == 0


@pytest.mark.slow
def test_machine_kind_names_the_machine_in_a_cache_key(bench_json: Path, tmp_path: Path, capsys: Capture) -> None:
    gpu = _on_machine(bench_json, tmp_path / "gpu.json", gpu="NVIDIA H100 80GB HBM3", torch="2.13.0+cu128",
                      cuda="12.8", cudnn=91002, transformers="5.24.0")
    assert main(["machine-kind", str(gpu)]) == 0
    key = capsys.readouterr().out.strip()
    for part in ("NVIDIA-H100-80GB-HBM3", "torch-2.13.0+cu128", "cuda-12.8", "cudnn-91002", "transformers-5.24.0"):
        assert part in key, key
    assert "," not in key and " " not in key and len(key) < 400  # what a GitHub cache key allows
    newer = _on_machine(gpu, tmp_path / "newer.json", transformers="5.24.1")
    assert main(["machine-kind", str(newer)]) == 0
    other = capsys.readouterr().out.strip()
    assert other != key and not other.startswith(key) and not key.startswith(other)
    assert main(["machine-kind", str(_on_machine(gpu, tmp_path / "same.json"))]) == 0
    assert capsys.readouterr().out.strip() == key
    bare = _edited(gpu, tmp_path / "bare.json", lambda d: d["machine_info"].pop("specperf"))
    assert main(["machine-kind", str(bare)]) == 2
    assert "records no kind of machine" in capsys.readouterr().err


@pytest.mark.slow
def test_an_errored_case_in_new_is_listed_and_fails_the_comparison(bench_json: Path, bench_suite: Path,
                                                                   tmp_path: Path, capsys: Capture,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    errored = _errored(bench_json, tmp_path / "errored.json", "small-k2-0:2")
    code, out, err = compare(capsys, bench_json, errored, "--config", str(bench_suite))
    assert code == 1
    assert not any(line.startswith("small-k2-0:2 ") for line in out.splitlines())  # no row of it in the table
    assert "small-k3-0:2" in out and "removed" not in out
    assert f"errored (in {errored}, no metrics: not compared): small-k2-0:2" in out
    assert "1 case(s)" in err and "errored before recording their metrics" in err and "regression(s)" not in err
    assert "errored before recording their metrics, skipped: small-k2-0:2" in caplog.text
    code, out, _ = compare(capsys, bench_json, errored, "--config", str(bench_suite), "--format", "github")
    assert code == 1 and not any(e["name"].startswith("small-k2-0:2 ") for e in json.loads(out))


@pytest.mark.slow
def test_an_errored_case_in_old_is_skipped(bench_json: Path, bench_suite: Path, tmp_path: Path, capsys: Capture,
                                           caplog: pytest.LogCaptureFixture) -> None:
    errored = _errored(bench_json, tmp_path / "errored.json", "small-k2-0:2")
    code, out, err = compare(capsys, errored, bench_json, "--config", str(bench_suite))
    assert code == 0, err
    assert "added (only in" in out and "small-k2-0:2" in out.split("added (only in")[1]
    assert "no regression in 8 draft case(s)" in err
    assert f"OLD file {errored}: 1 case(s) errored before recording their metrics, skipped" in caplog.text


@pytest.mark.slow
def test_the_report_skips_an_errored_case(bench_json: Path, tmp_path: Path, capsys: Capture,
                                          caplog: pytest.LogCaptureFixture) -> None:
    errored = _errored(bench_json, tmp_path / "errored.json", "lookup-k3-0:2")
    assert main(["report", str(errored), "--out", str(tmp_path / "out")]) == 0
    performance = (tmp_path / "out" / "performance.md").read_text()
    assert "lookup-k2-0:2" in performance and "lookup-k3-0:2 " not in performance
    assert "skipped: lookup-k3-0:2" in caplog.text
