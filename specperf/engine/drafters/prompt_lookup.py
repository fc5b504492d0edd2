"""Model-free drafting by n-gram lookup in the prompt and the tokens generated so far (Saxena 2023)."""

from __future__ import annotations

import torch

from specperf.engine.drafters.base import Drafter, Proposal
from specperf.engine.transfer import to_device


class PromptLookupDrafter(Drafter):
    """Proposes the tokens that followed the most recent earlier occurrence of the sequence's last n-gram.

    Tries n = max_ngram down to min_ngram. Unlike transformers' PromptLookupCandidateGenerator, which rescans the
    whole sequence every step, it keeps an index from each n-gram to the position after its latest occurrence and
    updates it with each committed token, so a lookup costs O(max_ngram) whatever the sequence length.
    """

    name = "prompt-lookup"

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got min_ngram={min_ngram}, max_ngram={max_ngram}")
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # seq positions whose following n-grams are in the index
        self._device = torch.device("cpu")

    def start(
        self,
        prompt_len: int,
        *,
        device: torch.device,
        temperature: float,
        generator: torch.Generator | None,
    ) -> None:
        self._index = {}
        self._indexed = 0
        self._device = device

    def _extend_index(self, seq: list[int]) -> None:
        # Register every n-gram that ends before the last token, mapped to where its continuation starts.
        for end in range(max(self._indexed, 1), len(seq)):
            for n in range(self.min_ngram, min(self.max_ngram, end) + 1):
                self._index[tuple(seq[end - n : end])] = end
        self._indexed = len(seq)

    def _lookup(self, seq: list[int]) -> int | None:
        for n in range(min(self.max_ngram, len(seq)), self.min_ngram - 1, -1):
            start = self._index.get(tuple(seq[len(seq) - n :]))
            if start is not None:
                return start
        return None

    def propose(self, seq: list[int], pending: torch.Tensor, k: int) -> Proposal:
        return Proposal(tokens=to_device(self.propose_ids(seq, k), self._device))  # asynchronous

    def propose_ids(self, seq: list[int], k: int) -> list[int]:
        self._extend_index(seq)
        start = self._lookup(seq)
        return [] if start is None else seq[start : start + k]

    def describe(self) -> str:
        return f"prompt-lookup(n={self.min_ngram}..{self.max_ngram})"
