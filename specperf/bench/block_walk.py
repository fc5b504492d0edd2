"""The engines' greedy block structure, walked over a teacher-forced replay of the draft (pure Python, no torch).

``matches[i]`` says whether the draft's argmax, teacher-forced along a request's output, equals output token
``i + 1`` (token 0 is the verifier's prefill token, never drafted). For greedy decoding the draft counters of a
request follow from ``matches`` and the loop's block rule alone, so the audit recomputes them here.

In half precision the engine's cached draft forwards and the replay's full-prefix forward round differently, and
where the draft's top two logits nearly tie (``near[i]``) the two may disagree. :func:`fewest_near_ties` finds
whether choosing such positions' outcomes the other way reproduces the engine's counters, and how many it takes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockRule:
    """How a loop sizes its draft blocks.

    specperf never drafts past ``max_new_tokens`` and accepts nothing past the output's end. vLLM (``max_new_tokens``
    None) drafts k tokens at every step and counts the leading correct ones even past the output (the replay must
    then reach into the verifier's continuation), but schedules no draft position past its context window:
    ``room`` is the window minus the prompt minus one, so a step at output position ``pos`` drafts at most
    ``room - pos`` tokens.
    """

    k: int
    max_new_tokens: int | None = None  # specperf's loop; None: vLLM's full blocks
    room: int | None = None  # vLLM: window - prompt length - 1; None: no window in reach

    @property
    def counts_past_end(self) -> bool:
        return self.max_new_tokens is None

    def block(self, pos: int) -> int:
        """Draft tokens of the step taken with ``pos`` output tokens emitted."""
        block = self.k if self.max_new_tokens is None else min(self.k, self.max_new_tokens - pos - 1)
        if self.room is not None:
            block = min(block, self.room - pos)
        return max(0, block)

    def limit(self, pos: int, n_tokens: int) -> int:
        """The most draft tokens a step at ``pos`` can accept."""
        block = self.block(pos)
        return block if self.counts_past_end else min(block, n_tokens - pos)


def greedy_steps(matches: Sequence[bool], rule: BlockRule, n_tokens: int) -> Iterator[tuple[int, int]]:
    """(drafted, accepted) for each step after the prefill of a request of ``n_tokens`` output tokens: a step at
    emitted position ``pos`` accepts the leading draft tokens the draft got right and emits them plus the verifier's
    token."""
    pos = 1
    while pos < n_tokens:
        block, limit = rule.block(pos), rule.limit(pos, n_tokens)
        n = 0
        while n < limit and matches[pos - 1 + n]:
            n += 1
        yield block, n
        pos += n + 1


def count_blocks(matches: Sequence[bool], rule: BlockRule, n_tokens: int) -> tuple[int, int, list[int]]:
    """(proposed, accepted, accept_counts) of the walk; steps that drafted nothing count nowhere."""
    proposed = accepted = 0
    counts = [0] * (rule.k + 1)
    for block, n in greedy_steps(matches, rule, n_tokens):
        if block:
            proposed, accepted = proposed + block, accepted + n
            counts[n] += 1
    return proposed, accepted, counts


def replay_blocks(matches: list[bool], k: int, max_new_tokens: int) -> tuple[int, int, list[int]]:
    """specperf's greedy block structure over ``matches``: (proposed, accepted, accept_counts)."""
    return count_blocks(matches, BlockRule(k, max_new_tokens), len(matches) + 1)


def drafted_counts(matches: Sequence[bool], rule: BlockRule, n_tokens: int) -> list[int]:
    """[j]: the walk's steps after the prefill that drafted exactly j tokens, j = 0..k (a step's verifier forward
    is over j + 1 tokens)."""
    counts = [0] * (rule.k + 1)
    for block, _ in greedy_steps(matches, rule, n_tokens):
        counts[block] += 1
    return counts


def block_drafted(matches: list[bool], k: int, max_new_tokens: int) -> list[int]:
    """:func:`drafted_counts` of specperf's greedy loop emitting len(matches) + 1 tokens at block size k."""
    return drafted_counts(matches, BlockRule(k, max_new_tokens), len(matches) + 1)


def block_calls(matches: list[bool], k: int, max_new_tokens: int) -> int:
    """Verifier calls (the prefill included) specperf's greedy loop makes to emit len(matches) + 1 tokens at block
    size k, the draft's teacher-forced ``matches`` being known."""
    return 1 + sum(block_drafted(matches, k, max_new_tokens))


def replay_full_blocks(matches: list[bool], k: int, n_tokens: int,
                       room: int | None = None) -> tuple[int, int, list[int]]:
    """vLLM's block structure: every step drafts k tokens (fewer only at the context window, see
    :class:`BlockRule`), even past max_tokens, and counts the leading ones the draft got right; ``matches`` must
    reach the last drafted position (the verifier's continuation past the output)."""
    return count_blocks(matches, BlockRule(k, None, room), n_tokens)


def _outcome_cost(match: bool, near: bool, want: bool) -> int | None:
    """Near-ties needed for a position to come out ``want``: 0 if the replay agrees, 1 if it is a near-tie, None if
    it cannot."""
    if match == want:
        return 0
    return 1 if near else None


def _step_outcomes(matches: Sequence[bool], near: Sequence[bool], rule: BlockRule, pos: int,
                   n_tokens: int) -> Iterator[tuple[int, int]]:
    """(accepted, near-ties it takes) for every outcome a step at ``pos`` can have."""
    limit, cost = rule.limit(pos, n_tokens), 0
    for n in range(limit + 1):
        if n < limit:  # the step stops here: position n is rejected
            stop = _outcome_cost(matches[pos - 1 + n], near[pos - 1 + n], False)
            if stop is not None:
                yield n, cost + stop
            accept = _outcome_cost(matches[pos - 1 + n], near[pos - 1 + n], True)
            if accept is None:
                return
            cost += accept
        else:  # every position up to the limit accepted: the block ran out, or the output ended
            yield n, cost


def fewest_near_ties(matches: Sequence[bool], near: Sequence[bool], rule: BlockRule, n_tokens: int,
                     target: tuple[int, int]) -> int | None:
    """The fewest near-tie positions whose outcome must differ from the replay's for the walk to give the engine's
    ``target`` (proposed, accepted); 0 when the replay gives it as is, None when no choice of near-tie outcomes
    does (a real disagreement).

    A dynamic programme over (position, proposed, accepted): each state keeps the fewest near-ties that reach it.
    """
    frontier: dict[int, dict[tuple[int, int], int]] = {1: {(0, 0): 0}}
    finished: list[int] = []
    while frontier:
        pos = min(frontier)
        states = frontier.pop(pos)
        if pos >= n_tokens:
            if target in states:
                finished.append(states[target])
            continue
        block = rule.block(pos)
        for n, cost in _step_outcomes(matches, near, rule, pos, n_tokens):
            bucket = frontier.setdefault(pos + n + 1, {})
            for (proposed, accepted), flips in states.items():
                key = (proposed + block, accepted + n) if block else (proposed, accepted)
                if key[0] > target[0] or key[1] > target[1]:
                    continue
                if key not in bucket or flips + cost < bucket[key]:
                    bucket[key] = flips + cost
    return min(finished) if finished else None


@dataclass(frozen=True)
class Walk:
    """A request's replayed draft decisions and the block rule of the loop that decoded it."""

    matches: list[bool]  # the draft's teacher-forced argmax == the next token (vLLM: past the output too)
    near: list[bool]  # that decision is a near-tie in the draft's dtype
    rule: BlockRule
    n_tokens: int  # output tokens of the request

    def counts(self) -> tuple[int, int, list[int]]:
        """(proposed, accepted, accept_counts) the loop makes if every decision is the replay's."""
        return count_blocks(self.matches, self.rule, self.n_tokens)

    def fewest_near_ties(self, target: tuple[int, int]) -> int | None:
        """See :func:`fewest_near_ties`."""
        return fewest_near_ties(self.matches, self.near, self.rule, self.n_tokens, target)
