"""Bad input: each gets a clear, specific error (what is wrong and how to fix it) and leaves no partial output.

Checklist: where each kind of bad input is covered (``this file`` = tests/test_bad_input.py).

- [x] YAML syntax error, with line and column: test_config.py::test_yaml_syntax_error_names_file_line_and_problem,
      test_plugin.py::test_bad_yaml_is_a_usage_error
- [x] unknown keys, with the closest valid key (difflib):
      test_config.py::test_unknown_top_level_key_suggests_the_closest,
      test_config.py::test_unknown_nested_key_suggests_the_closest
- [x] wrong types: test_config.py::test_wrong_types_and_values, test_config.py::test_bad_threshold_values
- [x] k < 1 or k > 64 in the config: test_config.py::test_bad_block_sizes;
      on the command line (--specperf-k): test_plugin.py::test_bad_option_values_are_refused,
      this file: test_bad_command_line_values
- [x] an empty draft list: test_config.py::test_empty_and_duplicate_drafts,
      test_config.py::test_narrowed_rejects; --specperf-drafts: this file: test_bad_command_line_values
- [x] an unknown model name offline (models.load_model): test_models.py::test_unavailable_hub_model_says_how_to_fix,
      test_models.py::test_unknown_embedded_name_lists_the_family
- [x] a draft tokenizer that differs from the verifier's: test_models.py::test_different_tokenizer_is_refused
- [x] a dataset file that is missing, empty or has the wrong columns, for every file source (file: .jsonl, .csv,
      .json; pubmedqa-json): this file: test_dataset_file_errors_for_every_source; also test_data.py::
      test_missing_file_names_the_path, test_empty_file, test_zero_rows, test_unknown_columns_name_found_and_expected,
      test_wrong_json_shapes_point_to_the_right_source
- [x] a slice out of range: test_data.py::test_out_of_range_slices_say_how_many_rows_exist
- [x] prompts longer than the context window under context_policy ``error``:
      test_data.py::test_error_policy_names_record_length_and_fix, test_data.py::test_empty_abstract_still_too_long
- [x] a baseline JSON that is missing, malformed or not a pytest-benchmark file:
      load_baseline: test_gates.py::test_bad_baseline_files_are_refused;
      --specperf-baseline: this file: test_plugin_refuses_a_bad_baseline_at_configure_time;
      specperf compare / report: test_cli.py::test_missing_and_malformed_files_exit_2,
      test_report.py::test_bad_files_are_config_errors, this file: test_cli_bad_input_writes_nothing
- [x] a baseline JSON from another suite (no case id in common; partial overlap only warns):
      --specperf-baseline: this file: test_plugin_refuses_a_baseline_of_another_suite,
      test_plugin_warns_about_a_partial_baseline, test_load_baseline_checks_the_case_ids;
      specperf compare: this file: test_cli_bad_input_writes_nothing, test_compare_with_partial_overlap_still_runs
- [x] a baseline JSON from another pytest-benchmark major version: this file:
      test_load_baseline_checks_the_benchmark_version, test_plugin_refuses_a_bad_baseline_at_configure_time,
      test_cli_bad_input_writes_nothing
- [x] a thresholds file whose per-draft keys name no draft of the suite: test_config.py::
      test_thresholds_naming_an_unknown_draft, test_config.py::test_thresholds_file; through the plugin and
      specperf compare, and a draft name misplaced at top level: this file: test_thresholds_naming_no_draft,
      test_plugin_refuses_thresholds_naming_no_draft, test_cli_bad_input_writes_nothing
- [x] --specperf-device cuda without CUDA, refused at configure time: this file:
      test_plugin_refuses_cuda_without_cuda; at model load: test_models.py::test_cuda_without_cuda_is_refused
- [x] the config parser never raises anything but a SpecperfError (hypothesis): test_config.py::test_fuzz_*;
      regressions of what the fuzzer found: this file: test_fuzz_findings_are_config_errors
- [x] no partial output: `specperf report` / `compare` with bad input write no file: this file:
      test_cli_bad_input_writes_nothing; report_from_json: test_report.py::test_bad_files_are_config_errors
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from specperf.cli import main
from specperf.config import apply_thresholds_file, load_config, parse_config
from specperf.data import load_records
from specperf.errors import ConfigError, DataError
from specperf.output.benchfile import installed_benchmark_version, load_baseline
from tests.helpers import SUITE

INSTALLED = installed_benchmark_version() or "5.2.3"
OTHER_MAJOR = f"{int(INSTALLED.split('.')[0]) - 1}.0.0"
# The draft cases of SUITE as the plugin tests run it (tests/helpers.py).
SUITE_CASES = ["small-k2-0:2", "small-k3-0:2", "lookup-k2-0:2", "lookup-k3-0:2", "small-hf-k2-0:2", "small-hf-k3-0:2"]
OTHER_CASES = ["gpt2-k4-0:32", "distilgpt2-k4-0:32", "baseline-0:32"]


def bench_file(path: Path, case_ids: list[str], *, version: str | None = INSTALLED) -> Path:
    """A minimal ``--benchmark-json`` file holding ``case_ids`` (draft cases are named ``<draft>-k<k>-<slice>``)."""
    benchmarks = []
    for case_id in case_ids:
        draft = None if case_id.startswith("baseline-") else case_id.rsplit("-k", 1)[0]
        benchmarks.append({"name": f"test[{case_id}]", "extra_info": {
            "case_id": case_id, "draft": draft, "verifier": "embedded:verifier", "speedup": 1.5,
            "acceptance_aggregate": 0.5}})
    data: dict[str, Any] = {"machine_info": {}, "commit_info": {}, "benchmarks": benchmarks,
                            "datetime": "2026-01-01T00:00:00"}
    if version is not None:
        data["version"] = version
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --------------------------------------------------------------------------- the config and its fuzz findings


def test_thresholds_naming_no_draft(tmp_path: Path) -> None:
    config = load_config()
    file = tmp_path / "thresholds.yaml"
    file.write_text("drafts:\n  draft-smal: {min_speedup: 1.2}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        apply_thresholds_file(config, file)
    message = str(info.value)
    assert "unknown draft 'draft-smal'" in message and "did you mean 'draft-small'?" in message
    assert "known drafts: draft-small, draft-medium" in message and "fix:" in message
    file.write_text("draft-small:\n  min_speedup: 1.2\n", encoding="utf-8")  # forgot the drafts: level
    with pytest.raises(ConfigError, match="'draft-small' is a draft name, but per-draft floors belong under 'drafts'"):
        apply_thresholds_file(config, file)


def test_fuzz_findings_are_config_errors(tmp_path: Path) -> None:
    base = {"verifier": "embedded:verifier", "drafts": [{"name": "d", "model": "m"}]}
    # A hex integer has no digit limit in YAML but more digits than repr() may print.
    file = tmp_path / "hex.yaml"
    file.write_text("verifier: embedded:verifier\ndrafts: [{name: d, model: m}]\nk: [0x" + "f" * 5000 + "]\n")
    with pytest.raises(ConfigError, match=r"k\[0\]: got <an integer of 20000 bits> \(int\); expected an integer"):
        load_config(file)
    # Nested aliases ("billion laughs"): the error quotes a bounded repr instead of printing 10**9 leaves.
    laughs = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
    file.write_text(laughs + "verifier: *i\ndrafts: [{name: d, model: m}]\n")
    with pytest.raises(ConfigError, match="unknown key 'a'"):
        load_config(file)
    with pytest.raises(ConfigError, match=r"verifier: got \[\[\[.*\(list\)"):
        parse_config({**base, "verifier": yaml.safe_load(laughs)["i"]})
    # Ints without a natural bound are capped: config_hash's json.dumps cannot print 16**5000.
    for key in ("threads", "batch_size"):
        with pytest.raises(ConfigError, match=f"{key}: got <an integer of 20001 bits> .*1..4096"):
            parse_config({**base, key: 16**5000})
    # PyYAML's int and float constructors fail raw (IndexError) on a bare tag.
    for tag in ("!!int", "!!float"):
        file.write_text(f"verifier: embedded:verifier\nk: {tag}\n")
        with pytest.raises(ConfigError, match="YAML value cannot be read .*fix: quote the value"):
            load_config(file)
    # A format spec could pad every prompt to gigabytes (MemoryError); templates take plain fields only.
    with pytest.raises(ConfigError, match="format spec or conversion.*plain"):
        parse_config({**base, "dataset": {"template": "{question:>999999999999}{abstract}"}})


# --------------------------------------------------------------------------- datasets


_ROWS_HF = [{"pubid": 1, "question": "Q?", "context": {"contexts": ["A."]}}]
_WRONG_COLUMNS = {".jsonl": '{"qid": 1, "text": "hello"}\n', ".csv": "qid,text\n1,hello\n",
                  ".json": '[{"qid": 1, "text": "hello"}]', "pubmedqa": '{"1": {"Q": "q", "TEXT": "a"}}'}


@pytest.mark.parametrize("kind", ["missing", "empty", "blank", "wrong columns"])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json", "pubmedqa"])
def test_dataset_file_errors_for_every_source(tmp_path: Path, suffix: str, kind: str) -> None:
    source = "pubmedqa-json" if suffix == "pubmedqa" else "file"
    file = tmp_path / ("ori_pqal.json" if suffix == "pubmedqa" else f"prompts{suffix}")
    if kind != "missing":
        file.write_text({"empty": "", "blank": "\n  \n", "wrong columns": _WRONG_COLUMNS[suffix]}[kind])
    with pytest.raises(DataError) as info:
        load_records(source, path=str(file))
    message = str(info.value)
    assert str(file) in message
    expected = {"missing": ("not found", "check the path"), "empty": ("is empty", "at least one record"),
                "blank": ("at least one record",),
                "wrong columns": ("QUESTION, CONTEXTS",) if suffix == "pubmedqa" else (
                    "['qid', 'text']", "id, question, abstract", "Rename the columns")}[kind]
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --------------------------------------------------------------------------- baseline files


def test_load_baseline_checks_the_benchmark_version(tmp_path: Path) -> None:
    other = bench_file(tmp_path / "old.json", SUITE_CASES, version=OTHER_MAJOR)
    with pytest.raises(ConfigError) as info:
        load_baseline(other)
    message = str(info.value)
    assert f"pytest-benchmark {OTHER_MAJOR}" in message and f"pytest-benchmark {INSTALLED} is installed" in message
    assert "fix: re-run the reference" in message
    same_major = f"{INSTALLED.split('.')[0]}.0.0"
    assert set(load_baseline(bench_file(tmp_path / "a.json", SUITE_CASES, version=same_major))) == set(SUITE_CASES)
    assert set(load_baseline(bench_file(tmp_path / "b.json", SUITE_CASES, version=None))) == set(SUITE_CASES)
    with pytest.raises(ConfigError, match="unreadable pytest-benchmark version 'next'"):
        load_baseline(bench_file(tmp_path / "c.json", SUITE_CASES, version="next"))


def test_load_baseline_checks_the_case_ids(tmp_path: Path) -> None:
    path = bench_file(tmp_path / "old.json", OTHER_CASES)
    with pytest.raises(ConfigError) as info:
        load_baseline(path, SUITE_CASES)
    message = str(info.value)
    assert "shares no case with this run" in message
    assert "gpt2-k4-0:32, distilgpt2-k4-0:32" in message and "small-k2-0:2, small-k3-0:2" in message
    assert "(6 in all)" in message and "fix:" in message
    assert set(load_baseline(path, ["gpt2-k4-0:32", "new-k4-0:32"])) == set(OTHER_CASES)  # partial overlap is fine


# --------------------------------------------------------------------------- the plugin, at configure time


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_perf="def test_speculative(specperf_case):\n    pass\n")
    return pytester


def collect(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("--specperf-config=suite.yaml", "--collect-only", "-q", *args)


def usage_error(result: pytest.RunResult, *fragments: str) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


@pytest.mark.slow
def test_bad_command_line_values(suite: pytest.Pytester) -> None:
    usage_error(collect(suite, "--specperf-k=4,65"), "--specperf-k", "each k must be in 1..64", "--specperf-k=2,4")
    usage_error(collect(suite, "--specperf-k=two"), "comma-separated integers", "fix:")
    usage_error(collect(suite, "--specperf-drafts=,"), "--specperf-drafts", "name at least one")
    usage_error(collect(suite, "--specperf-drafts=smal"), "specperf: command-line selection: drafts[0]",
                "did you mean 'small'?")
    usage_error(collect(suite, "--specperf-device=cuda:x"), "expected auto, cpu, cuda or cuda:N", "cpu")
    usage_error(collect(suite, "--specperf-baseline=missing.json"), "no such file or directory: missing.json", "fix:")


@pytest.mark.slow
def test_plugin_refuses_cuda_without_cuda(suite: pytest.Pytester) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    text = usage_error(collect(suite, "--specperf-device=cuda"), "specperf: device 'cuda'",
                       "CUDA is not available", "--specperf-device cpu")
    assert "Traceback" not in text
    suite.makefile(".yaml", cudasuite=SUITE.replace("device: cpu", "device: cuda:0"))
    usage_error(suite.runpytest_inprocess("--specperf-config=cudasuite.yaml", "--collect-only"),
                "specperf: device 'cuda:0'", "CUDA is not available")


@pytest.mark.slow
def test_plugin_refuses_a_bad_baseline_at_configure_time(suite: pytest.Pytester) -> None:
    (suite.path / "broken.json").write_text('{"benchmarks": [')
    usage_error(collect(suite, "--specperf-baseline=broken.json"), "specperf: baseline file broken.json is not "
                "valid JSON", "fix:")
    (suite.path / "other.json").write_text('{"results": []}')
    usage_error(collect(suite, "--specperf-baseline=other.json"), "not a pytest-benchmark JSON file")
    bench_file(suite.path / "old.json", SUITE_CASES, version=OTHER_MAJOR)
    usage_error(collect(suite, "--specperf-baseline=old.json"), f"written by pytest-benchmark {OTHER_MAJOR}",
                f"{INSTALLED} is installed")


@pytest.mark.slow
def test_plugin_refuses_a_baseline_of_another_suite(suite: pytest.Pytester) -> None:
    bench_file(suite.path / "old.json", OTHER_CASES)
    usage_error(collect(suite, "--specperf-baseline=old.json"), "specperf: baseline file old.json shares no case "
                "with this run", "gpt2-k4-0:32", "small-k2-0:2", "fix:")


@pytest.mark.slow
def test_plugin_warns_about_a_partial_baseline(suite: pytest.Pytester) -> None:
    bench_file(suite.path / "old.json", ["small-k2-0:2", *OTHER_CASES])
    result = collect(suite, "--specperf-baseline=old.json")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*baseline file old.json lacks 5 of this run's 6 draft case(s)*small-k3-0:2*"])


@pytest.mark.slow
def test_plugin_refuses_thresholds_naming_no_draft(suite: pytest.Pytester) -> None:
    suite.makefile(".yaml", thresholds="drafts:\n  smal:\n    min_speedup: 1.2\n")
    usage_error(collect(suite, "--specperf-thresholds=thresholds.yaml"), "specperf: thresholds.yaml: drafts: "
                "unknown draft 'smal'", "did you mean 'small'?", "known drafts: small, lookup, small-hf")


# --------------------------------------------------------------------------- specperf report / compare


def _cli_case(tmp_path: Path, kind: str) -> list[str]:
    """Arguments of a ``specperf`` command that gets bad input of one kind."""
    good = bench_file(tmp_path / "good.json", ["baseline-0:4", "draft-small-k2-0:4"])
    bad = tmp_path / "bad.json"
    if kind == "malformed":
        bad.write_text('{"benchmarks": [')
    elif kind == "not pytest-benchmark":
        bad.write_text('{"results": []}')
    elif kind == "no specperf cases":
        bad.write_text('{"benchmarks": [{"name": "x", "extra_info": {}}]}')
    elif kind == "other major version":
        bench_file(bad, ["baseline-0:4", "draft-small-k2-0:4"], version=OTHER_MAJOR)
    elif kind == "other suite":
        bench_file(bad, OTHER_CASES)
    elif kind == "thresholds naming no draft":
        (tmp_path / "thresholds.yaml").write_text("drafts:\n  nope: {min_speedup: 1}\n")
        return [str(good), str(good), "--thresholds", str(tmp_path / "thresholds.yaml")]
    return [str(bad), str(good)]


_FILE_KINDS = ["missing", "malformed", "not pytest-benchmark", "no specperf cases", "other major version"]
_PAIR_KINDS = ["other suite", "thresholds naming no draft"]  # compare only: two files, and thresholds


@pytest.mark.parametrize(("command", "kind"), [("report", k) for k in _FILE_KINDS] + [
    (c, k) for c in ("compare", "compare-github") for k in _FILE_KINDS + _PAIR_KINDS])
def test_cli_bad_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
                                      kind: str) -> None:
    paths = _cli_case(tmp_path, kind)
    out = tmp_path / "out"
    if command == "report":
        argv = ["report", paths[0], "--out", str(out)]
    else:
        fmt = ["--format", "github"] if command == "compare-github" else []
        argv = ["compare", *paths, "--output", str(out / "compare.json"), *fmt]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("specperf: error: ") and "fix:" in captured.err
    assert files_under(out) == []


def test_compare_with_partial_overlap_still_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = bench_file(tmp_path / "old.json", ["baseline-0:4", "draft-small-k2-0:4", "draft-small-k4-0:4"])
    new = bench_file(tmp_path / "new.json", ["baseline-0:4", "draft-small-k2-0:4", "draft-large-k2-0:4"])
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "added (only in" in out and "draft-large-k2-0:4" in out and "removed (only in" in out
