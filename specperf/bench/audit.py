"""Token-level audit, outside any timed region: replay a decoded sequence through the draft with teacher forcing.

Two figures, kept apart:
- agreement (the seed's "acceptance rate"): along the generated sequence, the fraction of positions where the
  draft's argmax equals the token the verifier emitted. Its aggregate estimates alpha.
- draft acceptance (vLLM's definition): accepted / proposed draft tokens, recomputed from the same replay by
  walking the engine's block structure (specperf.bench.block_walk). For greedy decoding it must equal the engine's
  own counters: exactly in float32; in float16/bfloat16 up to near-ties, positions where the draft's top two logits
  lie within the dtype's rounding (specperf.precision), which are counted and reported.
"""

from __future__ import annotations

import torch

from specperf.bench.block_walk import (
    BlockRule,
    Walk,
    block_calls,
    drafted_counts,
    replay_blocks,
    replay_full_blocks,
)
from specperf.bench.runner import CaseRunner
from specperf.config.cases import Case
from specperf.engine.drafters.base import Drafter
from specperf.engine.forward import ModelForward, as_forward, context_window, model_device, new_cache
from specperf.errors import SpecperfError
from specperf.precision import is_near_tie, tolerance_steps
from specperf.records import Audit, DecodeResult, first_divergence

__all__ = ["AuditMismatch", "audit_case", "audit_drafter", "audit_model_draft", "audit_vllm_model_draft",
           "block_calls", "divergences", "draft_matches", "draft_replay", "replay_blocks", "replay_full_blocks",
           "verifier_continuation"]


class AuditMismatch(SpecperfError):
    """The audit's recomputed greedy acceptance differs from the engine's own counters beyond near-ties."""


def dtype_name(model: torch.nn.Module) -> str:
    """``model``'s parameter dtype as the suite spells it: float32, float16, bfloat16."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _near_flags(top: list[list[float]], chosen: list[float], matches: list[bool], dtype: str) -> list[bool]:
    """Per position: is the draft's own decision a near-tie? Where the replay's argmax is the emitted token, the gap
    to its runner-up; where it is not, the gap from the argmax down to the emitted token."""
    flags = []
    for (first, second), token_logit, match in zip(top, chosen, matches):
        other = second if match else token_logit
        flags.append(is_near_tie(first - other, max(abs(first), abs(other)), dtype))
    return flags


@torch.inference_mode()
def draft_replay(draft: torch.nn.Module, prompt_ids: list[int], tokens: list[int]) -> tuple[list[bool], list[bool]]:
    """One teacher-forced forward of ``draft`` over prompt + tokens[:-1]: (matches, near) for tokens[1:].

    ``matches[i]``: the draft's argmax equals tokens[i + 1]. ``near[i]``: that decision is a near-tie in the draft's
    dtype (:mod:`specperf.precision`; never in float32). Token 0 follows the prompt and is the verifier's prefill
    token, which the engine never drafts.
    """
    if len(tokens) < 2:
        return [], []
    device = next(draft.parameters()).device
    ids = torch.tensor([prompt_ids + tokens[:-1]], device=device)  # (1, T + n - 1)
    logits = draft(input_ids=ids).logits[0, len(prompt_ids):].float()  # (n - 1, V): predicts tokens[1:]
    targets = torch.tensor(tokens[1:], device=device)  # (n - 1,)
    top = logits.topk(2, dim=-1)  # values, indices: (n - 1, 2)
    chosen = logits.gather(1, targets.unsqueeze(1))[:, 0]  # (n - 1,)
    matches = (top.indices[:, 0] == targets).tolist()
    dtype = dtype_name(draft)
    near = _near_flags(top.values.tolist(), chosen.tolist(), matches, dtype) if tolerance_steps(dtype) else \
        [False] * len(matches)
    return matches, near


def draft_matches(draft: torch.nn.Module, prompt_ids: list[int], tokens: list[int]) -> list[bool]:
    """The draft's teacher-forced argmax against tokens[1:] (see :func:`draft_replay`)."""
    return draft_replay(draft, prompt_ids, tokens)[0]


def audit_window(*models: torch.nn.Module) -> int | None:
    """The smallest context window among ``models`` (None when none states one): the audit never feeds past it."""
    windows = [w for w in map(context_window, models) if w is not None]
    return min(windows) if windows else None


@torch.inference_mode()
def verifier_continuation(verifier: torch.nn.Module | ModelForward, prompt_ids: list[int], tokens: list[int], n: int,
                          window: int | None = None) -> list[int]:
    """The verifier's next greedy tokens after prompt + tokens (KV-cached): what a verify step saw beyond the end of
    the output. At most ``n``, and never a position past ``window`` (default: the verifier's own): the last token
    returned is predicted at position ``window - 1``, so feeding prompt + tokens + all but the last one stays inside.
    ``verifier``: the model or its forward (see :func:`~specperf.engine.forward.as_forward`)."""
    run = as_forward(verifier)
    window = context_window(run.model) if window is None else window
    length = len(prompt_ids) + len(tokens)
    if window is not None:
        n = min(n, window - length + 1)
    if n <= 0 or length == 0:
        return []
    cache = new_cache()
    ids = torch.tensor([prompt_ids + tokens], device=model_device(run.model))  # (1, T + len(tokens))
    logits, extra = run(ids, cache, 1), []  # (1, 1, V)
    for step in range(n):
        token = logits[0, -1].argmax()  # ()
        extra.append(int(token))
        if step + 1 < n:
            logits = run(token.view(1, 1), cache, 1)  # (1, 1, V)
    return extra


def vllm_walk(draft: torch.nn.Module, verifier: torch.nn.Module | ModelForward, prompt_ids: list[int],
              tokens: list[int], *, k: int) -> Walk:
    """The draft's decisions along the output and the verifier's continuation, walked as vLLM drafts: full blocks to
    the last step, none scheduled past the context window."""
    run = as_forward(verifier)
    window = audit_window(draft, run.model)
    tail = verifier_continuation(run, prompt_ids, tokens, k, window) if tokens else []
    matches, near = draft_replay(draft, prompt_ids, tokens + tail)
    room = None if window is None else window - len(prompt_ids) - 1
    return Walk(matches, near, BlockRule(k, None, room), len(tokens))


def model_walk(draft: torch.nn.Module, prompt_ids: list[int], tokens: list[int], *, k: int,
               max_new_tokens: int) -> Walk:
    """The draft's decisions along the output, walked as specperf's greedy loop drafts."""
    matches, near = draft_replay(draft, prompt_ids, tokens)
    return Walk(matches, near, BlockRule(k, max_new_tokens), len(tokens))


def walk_audit(walk: Walk, *, calls: bool) -> Audit:
    """The :class:`Audit` of a walk: agreement along the output, the recomputed counts, and (``calls``) the verifier
    calls of specperf's loop."""
    proposed, accepted, counts = walk.counts()
    drafted = drafted_counts(walk.matches, walk.rule, walk.n_tokens) if calls and walk.n_tokens else []
    return Audit(walk.matches[: max(0, walk.n_tokens - 1)], proposed, accepted, counts,
                 calls=1 + sum(drafted) if drafted else 0, drafted=drafted)


def audit_vllm_model_draft(draft: torch.nn.Module, verifier: torch.nn.Module | ModelForward, prompt_ids: list[int],
                           tokens: list[int], *, k: int) -> Audit:
    """Agreement along the output, and acceptance recomputed as vLLM counts it (see :func:`vllm_walk`)."""
    return walk_audit(vllm_walk(draft, verifier, prompt_ids, tokens, k=k), calls=False)


def audit_model_draft(draft: torch.nn.Module, prompt_ids: list[int], tokens: list[int], *, k: int,
                      max_new_tokens: int) -> Audit:
    """Agreement and recomputed greedy acceptance of a draft model along a decoded sequence."""
    return walk_audit(model_walk(draft, prompt_ids, tokens, k=k, max_new_tokens=max_new_tokens), calls=True)


def audit_drafter(drafter: Drafter, prompt_ids: list[int], tokens: list[int], *, k: int,
                  max_new_tokens: int) -> Audit:
    """Replay any drafter step by step along the sequence (for drafters without a model, e.g. prompt lookup).

    Agreement here is per proposed position: did the drafter's token at that position match the emitted one.
    """
    device = torch.device("cpu")
    drafter.start(len(prompt_ids), device=device, temperature=0.0, generator=None)
    seq = list(prompt_ids) + tokens[:1]
    proposed = accepted = 0
    counts, drafted_by_size = [0] * (k + 1), [0] * (k + 1)
    matches: list[bool] = []
    pos, calls = 1, 1
    while pos < len(tokens):
        calls += 1
        block = min(k, max_new_tokens - pos - 1)
        drafted = drafter.propose(seq, torch.tensor(seq[-1:]), block).tokens.tolist() if block else []
        n = 0
        while n < len(drafted) and pos + n < len(tokens) and drafted[n] == tokens[pos + n]:
            n += 1
        matches.extend(d == t for d, t in zip(drafted[: n + 1], tokens[pos:]))
        drafted_by_size[len(drafted)] += 1
        if drafted:
            proposed, accepted = proposed + len(drafted), accepted + n
            counts[n] += 1
        drafter.rollback(len(seq) + n)
        seq.extend(tokens[pos : pos + n + 1])
        pos += n + 1
    return Audit(matches, proposed, accepted, counts, calls=calls if tokens else 0,
                 drafted=drafted_by_size if tokens else [])


@torch.inference_mode()
def divergence_margin(verifier: torch.nn.Module | ModelForward, prompt_ids: list[int], reference: list[int],
                      other: list[int], position: int) -> tuple[float, float] | None:
    """How close the verifier was to a tie where two greedy outputs part, as the reference's own path saw it:
    (logit of the reference's token minus that of the other's, the larger of the two logits' magnitudes) at
    ``position``. None when one output ended there (EOS).

    The logits come from the verifier-only loop's own computation, replayed: the prompt's prefill, then one cached
    forward per reference token, the same shapes in the same order, so the same numbers that chose the reference's
    token (a full-prefix forward would be a third computation, rounding differently from both outputs' paths). In
    float16/bfloat16 a verify forward over k+1 tokens rounds differently; where the two logits are this close, either
    token is the verifier's greedy choice.
    """
    if position >= len(reference) or position >= len(other):
        return None
    run = as_forward(verifier)
    cache = new_cache()
    ids = torch.tensor([prompt_ids], device=model_device(run.model))  # (1, T)
    logits = run(ids, cache, 1)[0, -1]  # (V,): predicts reference[0]
    for token in reference[:position]:
        logits = run(ids.new_tensor([[token]]), cache, 1)[0, -1]  # (V,)
    pair = logits[[reference[position], other[position]]].float().tolist()  # [theirs, ours]
    return pair[0] - pair[1], max(abs(pair[0]), abs(pair[1]))


# Engines whose draft-model steps follow vLLM's proposer (vLLM offline, and serving mode's servers, started as vLLM
# or attached to one): vLLM's walk of the draft's decisions replays them.
VLLM_ENGINES = ("vllm", "server")


def _walk(runner: CaseRunner, case: Case, prompt: list[int], tokens: list[int], k: int) -> Walk | None:
    """The walk of a model draft's decisions along ``tokens``; None for drafters replayed step by step."""
    assert case.draft is not None
    store, max_new = runner.store, runner.generation.max_new_tokens
    if case.draft.drafter == "prompt-lookup" or runner.interventions.replays_drafter:
        return None
    assert case.draft.model is not None
    draft = store.model(case.draft.model).model
    if case.draft.engine in VLLM_ENGINES:
        return vllm_walk(draft, store.verifier.forward, prompt, tokens, k=k)
    return model_walk(draft, prompt, tokens, k=k, max_new_tokens=max_new)


def audit_case(runner: CaseRunner, case: Case, results: list[DecodeResult], *, prompts: list[list[int]] | None = None,
               k: int | None = None, check: bool = True) -> list[Audit]:
    """Replay each request's tokens through the case's draft, teacher-forced; check greedy counters.

    ``prompts`` default to the case's slice and ``k`` to the case's; ``check=False`` replays tokens that the
    engine did not produce (the acceptance slice's verifier-only output), whose counters there are none to check.
    """
    assert case.draft is not None
    gen = runner.generation
    prompts = runner.store.prompts(case.slice).ids if prompts is None else prompts
    k = case.k if k is None else k
    vllm_model = case.draft.engine in VLLM_ENGINES and case.draft.drafter == "model"
    # Greedy counters are fully determined by the tokens: specperf's own, and vLLM's draft models (its n-gram
    # lookup matches differently from specperf's, so its audit is a comparison, not a check).
    checked = check and gen.temperature == 0.0 and (case.draft.engine == "specperf" or vllm_model)
    if case.draft.engine == "server":  # a server that gave no per-request counters has nothing to check
        checked = checked and all(r.proposed is not None for r in results)
    audits = []
    for i, (prompt, result) in enumerate(zip(prompts, results)):
        walk = _walk(runner, case, prompt, result.tokens, k)
        if walk is None:
            audit = audit_drafter(runner.new_drafter(case.draft), prompt, result.tokens, k=k,
                                  max_new_tokens=gen.max_new_tokens)
        else:
            audit = walk_audit(walk, calls=not vllm_model)
        if checked:
            audit.near_ties = check_counters(f"{case.id}, request {i}", result, audit, walk)
        audits.append(audit)
    return audits


def check_counters(label: str, result: DecodeResult, audit: Audit, walk: Walk | None) -> int:
    """The engine's (proposed, accepted) against the audit's recomputation: returns the near-ties it took to agree
    (0 when equal); raises :class:`AuditMismatch` when no choice of near-tie outcomes reproduces the engine's.

    Exact in float32 (no position is a near-tie there) and for model-free drafters (no walk).
    """
    target = (result.proposed, result.accepted)
    if target == (audit.proposed, audit.accepted):
        return 0
    flips = None
    if walk is not None and result.proposed is not None and result.accepted is not None:
        flips = walk.fewest_near_ties((result.proposed, result.accepted))
    if flips is not None:
        return flips
    near = sum(walk.near) if walk is not None else 0
    raise AuditMismatch(
        f"{label}: the engine counted {result.accepted}/{result.proposed} accepted/proposed draft tokens, the audit "
        f"recomputed {audit.accepted}/{audit.proposed}, and deciding the replay's {near} near-tie position(s) "
        "either way does not reproduce the engine's counts: the engine's draft or verify path disagrees with the "
        "draft model beyond rounding"
    )


def divergences(runner: CaseRunner, case: Case, baseline: list[DecodeResult],
                results: list[DecodeResult]) -> tuple[list[int | None], list[tuple[float, float] | None]]:
    """Per request: where the case's tokens first part from the baseline's, and (margin, magnitude) of the
    verifier's logits there (see :func:`divergence_margin`)."""
    prompts, verifier = runner.store.prompts(case.slice).ids, runner.store.verifier.forward
    positions, margins = [], []
    for prompt, base, result in zip(prompts, baseline, results):
        position = first_divergence(base.tokens, result.tokens)
        positions.append(position)
        margins.append(None if position is None else divergence_margin(verifier, prompt, base.tokens,
                                                                       result.tokens, position))
    return positions, margins
