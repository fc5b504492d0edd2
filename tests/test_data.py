"""Tests for the prompt data layer (specperf.data): loaders, templates, slices, context fitting."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from specperf.data import (
    DEFAULT_TEMPLATE,
    FitResult,
    Record,
    SliceSpec,
    apply_slice,
    fit_prompts,
    load_records,
    parse_slice,
    render_prompt,
    synth,
)
from specperf.errors import ContextLengthError, DataError

ORIGINAL_PUBMEDQA = (Path(__file__).resolve().parents[1].parent
                     / "shared/data/pubmedqa/ori_pqal.json")

# Hand-written rows in the Hugging Face PubMedQA schema (not taken from PubMedQA).
HF_ROWS: list[dict[str, Any]] = [
    {"pubid": 101, "question": "Does drug A lower fever in children?",
     "context": {"contexts": ["Fever is common.", "We gave drug A to 40 children."],
                 "labels": ["BACKGROUND", "METHODS"], "meshes": ["Child"]},
     "long_answer": "Drug A lowered fever.", "final_decision": "yes"},
    {"pubid": 102, "question": "Is walking good for {knees}?",
     "context": {"contexts": ["Knees hurt.", "Walking was studied in 12 adults."],
                 "labels": ["BACKGROUND", "METHODS"], "meshes": ["Adult"]},
     "long_answer": "Walking may help.", "final_decision": "maybe"},
    {"pubid": 103, "question": "Does tea prevent colds?",
     "context": {"contexts": ["Colds are frequent."], "labels": ["BACKGROUND"], "meshes": []},
     "long_answer": "Tea did not prevent colds.", "final_decision": "no"},
]
EXPECTED_ABSTRACTS = ["Fever is common. We gave drug A to 40 children.",
                      "Knees hurt. Walking was studied in 12 adults.", "Colds are frequent."]


def _records(n: int) -> list[Record]:
    return [Record(f"r{i}", f"q{i}?", f"a{i}.", f"p{i}") for i in range(n)]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _assert_hf_rows(records: list[Record]) -> None:
    assert [r.id for r in records] == ["101", "102", "103"]
    assert [r.abstract for r in records] == EXPECTED_ABSTRACTS
    assert records[1].question == "Is walking good for {knees}?"
    assert records[2].long_answer == "Tea did not prevent colds."
    assert records[0].prompt == ("Question: Does drug A lower fever in children?\nContext: "
                                 "Fever is common. We gave drug A to 40 children.\nAnswer:")


# --------------------------------------------------------------------------- loaders


def test_file_hf_schema_parquet(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pd.DataFrame(HF_ROWS).to_parquet(path)
    _assert_hf_rows(load_records("file", path=str(path)))


def test_file_hf_schema_jsonl_and_json(tmp_path: Path) -> None:
    _assert_hf_rows(load_records("file", path=str(_write_jsonl(tmp_path / "r.jsonl", HF_ROWS))))
    path = tmp_path / "r.json"
    path.write_text(json.dumps(HF_ROWS), encoding="utf-8")
    _assert_hf_rows(load_records("file", path=str(path)))


def test_file_hf_schema_csv_with_json_context(tmp_path: Path) -> None:
    frame = pd.DataFrame(HF_ROWS)
    frame["context"] = [json.dumps(c) for c in frame["context"]]
    frame.to_csv(tmp_path / "r.csv", index=False)
    _assert_hf_rows(load_records("file", path=str(tmp_path / "r.csv")))


def test_file_flat_csv(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    path.write_text("id,question,abstract\nx1,Why?,Because.\nx2,\"How, then?\",\"By a, b.\"\n")
    records = load_records("file", path=str(path), template="Q: {question} C: {abstract} A:")
    assert records == [Record("x1", "Why?", "Because.", "Q: Why? C: Because. A:"),
                       Record("x2", "How, then?", "By a, b.", "Q: How, then? C: By a, b. A:")]


def test_file_flat_jsonl_with_long_answer(tmp_path: Path) -> None:
    rows = [{"id": "a", "question": "Q?", "abstract": "A.", "long_answer": "L."}]
    path = _write_jsonl(tmp_path / "f.jsonl", rows)
    assert load_records("file", path=str(path))[0].long_answer == "L."


def test_original_pubmedqa_format_written_in_test(tmp_path: Path) -> None:
    data = {"900": {"QUESTION": "Does X work?", "CONTEXTS": ["One.", "Two."],
                    "LONG_ANSWER": "X works.", "final_decision": "yes", "LABELS": ["A", "B"]},
            "901": {"QUESTION": "Does Y work?", "CONTEXTS": ["Three."], "final_decision": "no"}}
    path = tmp_path / "ori.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    records = load_records("pubmedqa-json", path=str(path))
    assert [(r.id, r.question, r.abstract, r.long_answer) for r in records] == [
        ("900", "Does X work?", "One. Two.", "X works."), ("901", "Does Y work?", "Three.", "")]


@pytest.mark.skipif(not ORIGINAL_PUBMEDQA.exists(), reason="original PubMedQA JSON not present")
def test_real_original_pubmedqa_json() -> None:
    records = load_records("pubmedqa-json", path=str(ORIGINAL_PUBMEDQA))
    assert len(records) == 1000
    assert len({r.id for r in records}) == 1000
    assert all(r.question and r.abstract and r.long_answer for r in records)
    first_key = next(iter(json.loads(ORIGINAL_PUBMEDQA.read_text(encoding="utf-8"))))
    assert records[0].id == first_key
    assert records[0].prompt.startswith("Question: ") and records[0].prompt.endswith("\nAnswer:")


def test_hf_source_reads_local_parquet_through_datasets(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    path = tmp_path / "pqa.parquet"
    pd.DataFrame(HF_ROWS).to_parquet(path)
    _assert_hf_rows(load_records("hf", path=str(path)))


def test_hf_source_maps_hub_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_load(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(HF_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    _assert_hf_rows(load_records("hf", hf_config="pqa_artificial"))
    assert calls == [((), {"path": "qiaojin/PubMedQA", "name": "pqa_artificial", "split": "train"})]


def test_hf_source_offline_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'qiaojin/PubMedQA' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="not available offline") as info:
        load_records("hf")
    message = str(info.value)
    assert "HF_DATASETS_CACHE" in message and "source='file'" in message and "network" in message


def test_hf_source_rejects_unknown_config() -> None:
    with pytest.raises(DataError, match="pqa_labeled, pqa_artificial, pqa_unlabeled"):
        load_records("hf", hf_config="pqa_nope")


def test_embedded_source_splits() -> None:
    records = load_records("embedded")
    assert len(records) == synth.EVAL_ROWS
    assert records[0].id == "synth-eval-000001" and records[0].long_answer
    assert load_records("embedded", split="train")[0].id == "synth-train-000001"
    with pytest.raises(DataError, match="train, eval"):
        load_records("embedded", split="validation")


# --------------------------------------------------------------------------- loader errors


def test_unknown_source_lists_valid_ones() -> None:
    with pytest.raises(DataError, match="hf, pubmedqa-json, file, embedded"):
        load_records("s3")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="not found") as info:
        load_records("file", path=str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(DataError, match="pass path="):
        load_records("pubmedqa-json")


@pytest.mark.parametrize("name", ["e.json", "e.jsonl", "e.csv", "e.parquet"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_records("file", path=str(tmp_path / name))


def test_zero_rows(tmp_path: Path) -> None:
    (tmp_path / "z.json").write_text("[]")
    (tmp_path / "h.csv").write_text("id,question,abstract\n")
    for name in ("z.json", "h.csv"):
        with pytest.raises(DataError, match="contains no rows"):
            load_records("file", path=str(tmp_path / name))


def test_malformed_json_reports_location(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('[\n  {"id": "a",\n   "question": }\n]')
    with pytest.raises(DataError, match="line 3, column"):
        load_records("file", path=str(tmp_path / "bad.json"))
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n{oops\n')
    with pytest.raises(DataError, match="line 2"):
        load_records("file", path=str(tmp_path / "bad.jsonl"))
    (tmp_path / "ori.json").write_text('{"1": {"QUESTION": "q"')
    with pytest.raises(DataError, match="malformed JSON.*line 1"):
        load_records("pubmedqa-json", path=str(tmp_path / "ori.json"))


def test_unknown_columns_name_found_and_expected(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("qid,text\n1,hello\n")
    with pytest.raises(DataError) as info:
        load_records("file", path=str(tmp_path / "c.csv"))
    message = str(info.value)
    assert "['qid', 'text']" in message
    assert "pubid, question, context" in message and "id, question, abstract" in message


def test_wrong_json_shapes_point_to_the_right_source(tmp_path: Path) -> None:
    (tmp_path / "ori.json").write_text(json.dumps({"5": {"QUESTION": "q", "CONTEXTS": ["c"]}}))
    with pytest.raises(DataError, match="source='pubmedqa-json'"):
        load_records("file", path=str(tmp_path / "ori.json"))
    (tmp_path / "list.json").write_text(json.dumps([{"id": "a", "question": "q", "abstract": "c"}]))
    with pytest.raises(DataError, match="source='file'"):
        load_records("pubmedqa-json", path=str(tmp_path / "list.json"))
    (tmp_path / "odd.json").write_text(json.dumps({"5": {"Q": "q"}}))
    with pytest.raises(DataError, match="QUESTION, CONTEXTS"):
        load_records("pubmedqa-json", path=str(tmp_path / "odd.json"))


def test_empty_fields_and_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("id,question,abstract\na,Q?,\n")
    with pytest.raises(DataError, match="empty abstract"):
        load_records("file", path=str(tmp_path / "e.csv"))
    (tmp_path / "d.csv").write_text("id,question,abstract\na,Q?,A.\na,R?,B.\n")
    with pytest.raises(DataError, match="'a' appears more than once"):
        load_records("file", path=str(tmp_path / "d.csv"))


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "rows.txt").write_text("hello")
    with pytest.raises(DataError, match=r"\.parquet, \.jsonl, \.json, \.csv"):
        load_records("file", path=str(tmp_path / "rows.txt"))


# --------------------------------------------------------------------------- templates


def test_render_prompt_default_and_literal_braces() -> None:
    assert render_prompt(DEFAULT_TEMPLATE, "Q{x}?", "A.") == "Question: Q{x}?\nContext: A.\nAnswer:"
    assert render_prompt("{{ {abstract} | {question} }}", "q", "a") == "{ a | q }"


@pytest.mark.parametrize(("template", "pattern"), [
    ("Question: {question}\nAnswer:", r"missing \{abstract\}"),
    ("Context: {abstract}", r"missing \{question\}"),
    ("{question} {abstract} {answer}", r"unknown field\(s\) '\{answer\}'"),
    ("{question} {abstract} {}", r"unknown field"),
    ("{question {abstract}", "malformed"),
])
def test_bad_templates(template: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern) as info:
        render_prompt(template, "q", "a")
    assert "{question} and {abstract}" in str(info.value)


def test_load_records_checks_template_before_reading() -> None:
    with pytest.raises(DataError, match="missing"):
        load_records("embedded", template="{question}")


# --------------------------------------------------------------------------- slices


@pytest.mark.parametrize(("spec", "name"), [
    ("0:32", "0:32"), ("007:10", "7:10"), (" head:32 ", "head:32"), ("random:5", "random:5:seed=0"),
    ("random:5:seed=42", "random:5:seed=42"), ("all", "all"),
])
def test_slice_names_are_canonical_and_round_trip(spec: str, name: str) -> None:
    parsed = parse_slice(spec)
    assert parsed.name == name
    assert parse_slice(parsed.name) == parsed


def test_range_and_head_select_the_same_rows_under_different_names() -> None:
    records = _records(40)
    assert apply_slice(records, "0:32") == apply_slice(records, "head:32") == records[:32]
    assert apply_slice(records, "5:8") == records[5:8]
    assert apply_slice(records, "all") == records
    assert apply_slice(records, SliceSpec("range", start=0, stop=40)) == records


def test_random_slice_is_stable_and_without_replacement() -> None:
    records = _records(50)
    picked = apply_slice(records, "random:10:seed=7")
    assert picked == apply_slice(records, "random:10:seed=7")
    assert len({r.id for r in picked}) == 10
    # Documented contract: random.Random(seed).sample over indices, in drawn order.
    assert [r.id for r in picked] == [f"r{i}" for i in random.Random(7).sample(range(50), 10)]
    assert [r.id for r in apply_slice(_records(10), "random:3:seed=0")] == ["r6", "r9", "r0"]
    assert apply_slice(records, "random:10:seed=8") != picked


@pytest.mark.parametrize("spec", ["", "1:", ":5", "-1:3", "head", "head:-2", "random:3:seed=x",
                                  "random:3:7", "first:5", "0:5:2", "ALL"])
def test_malformed_slices_show_accepted_forms(spec: str) -> None:
    with pytest.raises(DataError, match="malformed slice.*'all'.*head:<n>.*random:<n>"):
        parse_slice(spec)


@pytest.mark.parametrize("spec", ["3:3", "5:2", "head:0", "random:0"])
def test_slices_selecting_no_rows(spec: str) -> None:
    with pytest.raises(DataError, match="selects no rows"):
        parse_slice(spec)


def test_out_of_range_slices_say_how_many_rows_exist() -> None:
    records = _records(10)
    with pytest.raises(DataError, match="only 10 are loaded"):
        apply_slice(records, "0:11")
    with pytest.raises(DataError, match="only 10 are loaded"):
        apply_slice(records, "head:20")
    with pytest.raises(DataError, match="asks for 11 rows but only 10"):
        apply_slice(records, "random:11")
    with pytest.raises(DataError, match="no records are loaded"):
        apply_slice([], "all")


# --------------------------------------------------------------------------- context fitting

TOKENIZER_CORPUS = [
    "Question: Does metformin reduce mortality in patients with sepsis?",
    "Context: BACKGROUND: Sepsis is common. METHODS: We studied 400 adults. RESULTS: Mortality "
    "was 12.5% versus 18.0% (odds ratio 0.65; p=0.01). CONCLUSIONS: Metformin helped.",
    "Answer: Metformin reduced mortality in adults with sepsis.",
]


def _train_tokenizer(bos: bool) -> Any:
    """A tiny byte-level BPE tokenizer (GPT-2 style), trained in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=350, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TOKENIZER_CORPUS * 3, trainer)
    if bos:  # like Llama: every encoded prompt starts with a special token
        tok.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return _train_tokenizer(bos=False)


def _record(rid: str, question: str, abstract: str) -> Record:
    return Record(rid, question, abstract, render_prompt(DEFAULT_TEMPLATE, question, abstract))


LONG_ABSTRACT = " ".join(f"Sentence {i} says metformin lowered mortality by {i}.{i}% in sepsis."
                         for i in range(30))


def _check_shortened(tokenizer: Any, record: Record, ids: list[int], budget: int) -> None:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    head = f"Question: {record.question}\nContext: "
    assert len(ids) <= budget
    assert text.startswith(head) and text.endswith("\nAnswer:")
    kept = text[len(head):-len("\nAnswer:")]
    assert kept and record.abstract.startswith(kept) and len(kept) < len(record.abstract)
    assert "\ufffd" not in kept


def test_short_prompts_are_left_alone(tokenizer: Any) -> None:
    records = [_record("a", "Does it work?", "It did."), _record("b", "Why?", "Because.")]
    result = fit_prompts(records, tokenizer, max_context=200, max_new_tokens=20)
    assert result == FitResult([tokenizer.encode(r.prompt) for r in records], 0, [])


def test_truncate_abstract_keeps_question_and_template(tokenizer: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    records = [_record("short", "Why?", "Because."),
               _record("long1", "Does metformin reduce mortality?", LONG_ABSTRACT),
               _record("long2", "Is it safe in sepsis?", "Résumé β-blocker ≥ 5 µg. " * 40)]
    with caplog.at_level(logging.INFO, logger="specperf.data"):
        result = fit_prompts(records, tokenizer, max_context=160, max_new_tokens=40)
    assert result.n_shortened == 2 and result.shortened_ids == ["long1", "long2"]
    assert result.prompt_ids[0] == tokenizer.encode(records[0].prompt)
    for record, ids in zip(records[1:], result.prompt_ids[1:]):
        _check_shortened(tokenizer, record, ids, budget=120)
        assert len(ids) >= 120 - 8  # cut close to the budget, not far below it
    assert "shortened the abstract of 2 of 3 prompts" in caplog.text


def test_truncation_counts_special_tokens(tokenizer: Any) -> None:
    with_bos = _train_tokenizer(bos=True)
    record = _record("long", "Does metformin reduce mortality?", LONG_ABSTRACT)
    result = fit_prompts([record], with_bos, max_context=100, max_new_tokens=30)
    ids = result.prompt_ids[0]
    assert ids[0] == 0 and len(ids) <= 70
    _check_shortened(with_bos, record, ids, budget=70)


def test_empty_abstract_still_too_long(tokenizer: Any) -> None:
    record = _record("q-too-long", "Does metformin reduce mortality? " * 20, "Short.")
    with pytest.raises(ContextLengthError, match="q-too-long.*even with an empty abstract") as info:
        fit_prompts([record], tokenizer, max_context=60, max_new_tokens=10)
    assert "budget is 50" in str(info.value) and "max_new_tokens" in str(info.value)


def test_error_policy_names_record_length_and_fix(tokenizer: Any) -> None:
    record = _record("too-long", "Does metformin reduce mortality?", LONG_ABSTRACT)
    length = len(tokenizer.encode(record.prompt))
    with pytest.raises(ContextLengthError) as info:
        fit_prompts([record], tokenizer, max_context=100, max_new_tokens=20, policy="error")
    message = str(info.value)
    assert "'too-long'" in message and f"is {length} tokens" in message
    assert "budget is 80" in message and "policy='truncate-abstract'" in message
    fits = fit_prompts([record], tokenizer, max_context=length + 5, max_new_tokens=5,
                       policy="error")
    assert fits.prompt_ids == [tokenizer.encode(record.prompt)] and fits.n_shortened == 0


def test_unknown_policy_and_impossible_budget(tokenizer: Any) -> None:
    records = [_record("a", "Q?", "A.")]
    with pytest.raises(DataError, match="truncate-abstract, error"):
        fit_prompts(records, tokenizer, max_context=100, max_new_tokens=10, policy="drop")
    with pytest.raises(ContextLengthError, match="lower max_new_tokens"):
        fit_prompts(records, tokenizer, max_context=100, max_new_tokens=100)


def test_fit_uses_the_given_template(tokenizer: Any) -> None:
    record = _record("a", "Q?", LONG_ABSTRACT)
    template = "[{abstract}] asks {question} ->"
    ids = fit_prompts([record], tokenizer, max_context=60, max_new_tokens=10,
                      template=template).prompt_ids[0]
    text = tokenizer.decode(ids)
    assert len(ids) <= 50 and text.startswith("[Sentence 0") and text.endswith("] asks Q? ->")


def test_hf_source_reads_local_directory_with_config_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    (tmp_path / "repo" / "pqa_labeled").mkdir(parents=True)
    pd.DataFrame(HF_ROWS).to_parquet(tmp_path / "repo/pqa_labeled/train-00000-of-00001.parquet")
    _assert_hf_rows(load_records("hf", path=str(tmp_path / "repo")))
    with pytest.raises(DataError, match="split 'test'"):
        load_records("hf", path=str(tmp_path / "repo"), split="test")
