"""Tests for the synthetic PubMedQA-shaped generator (specperf.data.synth)."""

from __future__ import annotations

import hashlib
import json
import re
import statistics

import pytest

from specperf.data import DEFAULT_TEMPLATE, synth
from specperf.errors import DataError

SENTENCE_END = re.compile(r"[.?!](?=\s|$)")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def train_rows() -> list[dict[str, str]]:
    return synth.generate_records(5000, split="train")


@pytest.fixture(scope="module")
def eval_rows() -> list[dict[str, str]]:
    return synth.generate_records(300, split="eval")


def test_same_arguments_give_identical_rows() -> None:
    assert synth.generate_records(50, split="eval", seed=3) == synth.generate_records(
        50, split="eval", seed=3)


def test_output_is_pinned_byte_for_byte() -> None:
    # Benchmarks compare results across machines and versions, so the corpus must not drift:
    # changing a word list or template changes this hash on purpose.
    blob = json.dumps(synth.generate_records(20, split="eval"), sort_keys=True).encode()
    assert hashlib.sha256(blob).hexdigest() == PINNED_EVAL_SHA256


def test_shorter_run_is_prefix_of_longer_run() -> None:
    assert synth.generate_records(7, split="train") == synth.generate_records(30, split="train")[:7]


def test_seed_and_split_change_the_stream() -> None:
    base = synth.generate_records(5, split="train", seed=0)
    assert synth.generate_records(5, split="train", seed=1) != base
    assert [r["question"] for r in synth.generate_records(5, split="eval")] != [
        r["question"] for r in base]


def test_eval_rows_never_appear_in_train(train_rows: list[dict[str, str]],
                                         eval_rows: list[dict[str, str]]) -> None:
    train_keys = {(r["question"], r["abstract"]) for r in train_rows}
    assert not [r["id"] for r in eval_rows if (r["question"], r["abstract"]) in train_keys]
    assert len({r["abstract"] for r in train_rows}) == len(train_rows)


def test_ids_keys_and_decisions(eval_rows: list[dict[str, str]]) -> None:
    assert eval_rows[0]["id"] == "synth-eval-000001"
    assert eval_rows[-1]["id"] == "synth-eval-000300"
    assert synth.generate_records(1, split="train")[0]["id"] == "synth-train-000001"
    for row in eval_rows:
        assert set(row) == {"id", "question", "abstract", "long_answer", "final_decision"}
        assert row["final_decision"] in ("yes", "no", "maybe")
    assert {r["final_decision"] for r in eval_rows} == {"yes", "no", "maybe"}


def test_abstract_shape(train_rows: list[dict[str, str]]) -> None:
    words = [len(r["abstract"].split()) for r in train_rows]
    assert 120 <= statistics.median(words) <= 250
    assert sum(120 <= w <= 250 for w in words) / len(words) > 0.95
    for row in train_rows[:500]:
        abstract = row["abstract"]
        assert 4 <= len(SENTENCE_END.findall(abstract)) <= 7, abstract
        positions = [abstract.index(h) for h in ("BACKGROUND:", "METHODS:", "RESULTS:",
                                                  "CONCLUSIONS:")]
        assert positions == sorted(positions) and positions[0] == 0
        assert "%" in abstract and "odds ratio" in abstract and "p" in abstract
        assert re.search(r"\(n=\d+\)", abstract)


def test_question_form(eval_rows: list[dict[str, str]]) -> None:
    for row in eval_rows:
        assert row["question"].endswith("?")
        assert re.match(r"(Does|Is|Can) .+ (reduce|associated with lower) .+ with .+\?$",
                        row["question"])


def _intervention(question: str) -> str:
    match = re.match(r"(?:Does|Is|Can) (.+?) (?:reduce|associated with lower) ", question)
    assert match, question
    return match[1]


def _crude_p(abstract: str) -> float:
    results = abstract[abstract.index("RESULTS:"):]
    match = re.search(r"confidence interval [\d.]+ to [\d.]+; p([=<])(0\.\d+)\)", results)
    assert match, results
    return float(match[2])


def test_long_answer_reuses_question_and_abstract(eval_rows: list[dict[str, str]]) -> None:
    for row in eval_rows:
        answer = row["long_answer"]
        assert 1 <= len(SENTENCE_END.findall(answer)) <= 2
        assert _intervention(row["question"]).lower() in answer.lower()
        for number in NUMBER.findall(answer):
            assert number in row["abstract"], (number, row["id"])


def test_text_agrees_with_final_decision(train_rows: list[dict[str, str]]) -> None:
    for row in train_rows[:1000]:
        decision, answer, p = row["final_decision"], row["long_answer"], _crude_p(row["abstract"])
        interval = re.search(r"interval ([\d.]+) to ([\d.]+)", row["abstract"])
        assert interval
        low, high = float(interval[1]), float(interval[2])
        if decision == "yes":
            assert " reduced " in answer and p < 0.05 and high < 1
        elif decision == "no":
            assert "did not reduce" in answer and p > 0.05 and low < 1 < high
        else:
            assert "may reduce" in answer and p < 0.05
            assert "no longer significant" in row["abstract"]


def test_word_lists_have_variety_without_duplicates() -> None:
    for words in (synth.INTERVENTIONS, synth.OUTCOMES, synth.CONDITIONS, synth.POPULATIONS,
                  synth.COUNTRIES):
        assert 40 <= len(words) <= 80
        assert len(set(words)) == len(words)
    assert len(set(synth.DESIGNS)) == len(synth.DESIGNS) >= 25


def test_train_corpus_renders_prompt_answer_and_end_marker() -> None:
    rows = synth.generate_records(3, split="train", seed=2)
    docs = synth.train_corpus(3, seed=2)
    assert len(docs) == 3
    for row, doc in zip(rows, docs):
        prompt = DEFAULT_TEMPLATE.format(question=row["question"], abstract=row["abstract"])
        assert doc == prompt + " " + row["long_answer"] + synth.END_MARKER
    custom = synth.train_corpus(1, template="Q: {question}\nA: {abstract}\n=>", end_marker="</s>")
    assert custom[0].startswith("Q: ") and custom[0].endswith("</s>") and "\n=> " in custom[0]


def test_eval_rows_constant() -> None:
    assert synth.EVAL_ROWS == 256


@pytest.mark.parametrize("kwargs", [{"n": 3, "split": "test"}, {"n": -1, "split": "train"},
                                    {"n": 2.0, "split": "eval"}])
def test_bad_arguments_raise_data_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(DataError, match="use one of|non-negative int"):
        synth.generate_records(**kwargs)  # type: ignore[arg-type]


PINNED_EVAL_SHA256 = "97669cc6a6ba7924a5639f458245c56e2b6fc6e8684eb94b0876dd5c5fa16e99"
