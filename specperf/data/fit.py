"""Context fitting: tokenize prompts so that prompt + new tokens fit the verifier's window."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from specperf.data.prompt import DEFAULT_TEMPLATE, Record, check_template, render_prompt
from specperf.errors import ContextLengthError, DataError

logger = logging.getLogger(__name__)

POLICIES = ("truncate-abstract", "error")


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that :func:`fit_prompts` uses."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...


@dataclass
class FitResult:
    """Token ids of every prompt (same order as the records) and which ones were shortened."""

    prompt_ids: list[list[int]]
    n_shortened: int
    shortened_ids: list[str]


def _encode(tokenizer: Tokenizer, text: str, special: bool) -> list[int]:
    if hasattr(tokenizer, "encode"):
        return list(tokenizer.encode(text, add_special_tokens=special))
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])  # type: ignore[operator]


def _budget(max_context: int, max_new_tokens: int) -> int:
    if max_context <= 0 or max_new_tokens < 0:
        raise ContextLengthError(f"max_context ({max_context}) must be positive and "
                                 f"max_new_tokens ({max_new_tokens}) non-negative; fix the values")
    if max_new_tokens >= max_context:
        raise ContextLengthError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt "
                                 f"in max_context ({max_context}); lower max_new_tokens")
    return max_context - max_new_tokens


def _shorten(record: Record, tokenizer: Tokenizer, template: str, budget: int) -> list[int]:
    """Prompt ids with the abstract cut to its longest tried prefix that fits ``budget``."""
    empty = _encode(tokenizer, render_prompt(template, record.question, ""), special=True)
    if len(empty) > budget:
        raise ContextLengthError(
            f"prompt for record {record.id!r} does not fit even with an empty abstract: the "
            f"question and template take {len(empty)} tokens but the budget is {budget} "
            "(max_context - max_new_tokens); raise max_context if the model allows it, lower "
            "max_new_tokens, or shorten the question/template")
    abstract_ids = _encode(tokenizer, record.abstract, special=False)
    keep = min(len(abstract_ids), budget - len(empty))
    while keep > 0:
        # A cut inside a multi-byte character decodes to U+FFFD; drop it with the whitespace.
        text = tokenizer.decode(abstract_ids[:keep]).rstrip().rstrip("\ufffd").rstrip()
        ids = _encode(tokenizer, render_prompt(template, record.question, text), special=True)
        if len(ids) <= budget:
            return ids
        # BPE merges differ at the cut and next to the template, so trim the overshoot and retry.
        keep -= max(1, len(ids) - budget)
    return empty


def fit_prompts(
    records: Sequence[Record],
    tokenizer: Tokenizer,
    *,
    max_context: int,
    max_new_tokens: int,
    template: str = DEFAULT_TEMPLATE,
    policy: str = "truncate-abstract",
) -> FitResult:
    """Tokenize every prompt so that prompt + ``max_new_tokens`` fits ``max_context``.

    Prompts are rendered from ``template`` and tokenized with the tokenizer's special
    tokens (e.g. BOS), as the model will see them. Over-long prompts are handled by
    ``policy``: "truncate-abstract" keeps the leading part of the abstract (never the
    question or template); "error" raises ContextLengthError. Unknown policy: DataError.
    """
    if policy not in POLICIES:
        raise DataError(f"unknown context policy {policy!r}; use one of {', '.join(POLICIES)}")
    check_template(template)
    budget = _budget(max_context, max_new_tokens)
    prompt_ids: list[list[int]] = []
    shortened: list[str] = []
    for record in records:
        ids = _encode(tokenizer, render_prompt(template, record.question, record.abstract), True)
        if len(ids) > budget:
            if policy == "error":
                raise ContextLengthError(
                    f"prompt for record {record.id!r} is {len(ids)} tokens but the budget is "
                    f"{budget} (max_context {max_context} - max_new_tokens {max_new_tokens}); "
                    "use policy='truncate-abstract' to shorten its abstract, or lower "
                    "max_new_tokens")
            ids = _shorten(record, tokenizer, template, budget)
            shortened.append(record.id)
        prompt_ids.append(ids)
    if shortened:
        logger.info("shortened the abstract of %d of %d prompts to fit %d tokens "
                    "(max_context %d - max_new_tokens %d)", len(shortened), len(records), budget,
                    max_context, max_new_tokens)
    return FitResult(prompt_ids=prompt_ids, n_shortened=len(shortened), shortened_ids=shortened)
