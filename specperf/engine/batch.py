"""Batched decoding: B prompts of different lengths together, each row accepting its own number of draft tokens.

Cache design: append and mask. All rows of a model share one physical cache (``RollbackCache``, in-place appends)
whose columns are token slots; a (B, L) mask says which slots hold a live token of each row, and each row keeps its
own logical length, from which its position ids come. A step feeds the same number of slots to every row (left- or
right-padded with masked dummies); slots a row rejects stay in place, masked, and the physical tail that no row
kept is rolled back like a batch-1 cache. So rows advance independently, nothing waits for the slowest row's
acceptance, and only the models' standard inputs are used (``attention_mask`` + ``position_ids``): any causal LM
that takes a DynamicCache works. The price: masked slots still cost attention (at most k slots per step, about
(1 - acceptance) x k) — cheaper and simpler than gpt-fast's per-row scatter into a static cache, which needs
custom attention masks per model. Rows that finish (EOS or max_new_tokens) leave the batch: their cache rows are
dropped once, so they cost nothing afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from specperf.engine.batch_cache import BatchState, left_padded
from specperf.engine.batch_draft import BatchModelDraft, BatchProposal, PerRowDraft
from specperf.engine.decode import validate
from specperf.engine.drafters.base import Drafter
from specperf.engine.drafters.model import ModelDrafter
from specperf.engine.forward import model_device
from specperf.engine.sampling import choose, make_generator, sample, to_probs
from specperf.engine.step_counters import StepCounters
from specperf.engine.timing import Clock
from specperf.errors import ConfigError
from specperf.records import DecodeResult


def verify_batch(logits: torch.Tensor, proposal: BatchProposal, temperature: float,
                 generator: torch.Generator) -> tuple[list[int], list[list[int]]]:
    """Per row: accepted draft count n_b and committed tokens (accepted drafts + the verifier's own). One host sync.

    logits: (B, kmax+1, V) verifier logits at [pending, d_1..d_kmax]; row b's block is its first lengths[b] drafts.
    """
    draft, lengths = proposal.tokens, proposal.lengths  # (B, kmax)
    batch, kmax = draft.shape
    in_block = torch.arange(kmax, device=draft.device) < torch.tensor(lengths, device=draft.device)[:, None]
    if temperature == 0.0:
        # Greedy: p_i = argmax; accept d_{i+1} while it equals p_i; then emit p_n.
        fallback = logits.argmax(dim=-1)  # (B, kmax+1)
        ok = (draft == fallback[:, :kmax]) & in_block  # (B, kmax)
    else:
        ok, fallback = rejection_sample(logits, proposal, temperature, generator, in_block)
    n = ok.long().cumprod(dim=1).sum(dim=1)  # (B,) leading accepted drafts
    host = torch.cat([n[:, None], draft, fallback], dim=1).tolist()  # the step's one host sync
    counts = [row[0] for row in host]
    committed = [row[1 : 1 + c] + [row[1 + kmax + c]] for row, c in zip(host, counts)]
    return counts, committed


def rejection_sample(logits: torch.Tensor, proposal: BatchProposal, temperature: float,
                     generator: torch.Generator, in_block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rejection sampling per row (Leviathan et al. 2023), as verify_sampling, for all rows at once.

    p = softmax(logits / T) is the verifier's (B, kmax+1, V); q the draft's (B, kmax, V), one-hot on the drafted
    token x_i when the drafter has none. Returns (accepted (B, kmax), fallback token per stopping point (B, kmax+1)).
    """
    draft = proposal.tokens  # (B, kmax)
    batch, kmax = draft.shape
    p = to_probs(logits, temperature)  # (B, kmax+1, V)
    q = proposal.probs if proposal.probs is not None else torch.nn.functional.one_hot(draft, p.shape[-1]).float()
    p_x = p[:, :kmax].gather(2, draft[..., None])[..., 0]  # (B, kmax) p_i(x_i)
    q_x = q.gather(2, draft[..., None])[..., 0]  # (B, kmax) q_i(x_i)
    # Accept x_i with probability min(1, p(x)/q(x)): u < p/q  <=>  u * q < p.
    u = torch.rand((batch, kmax), device=p.device, generator=generator)  # (B, kmax)
    accept = (u * q_x < p_x) & in_block
    # A rejection at i resamples from norm(max(0, p_i - q_i)); at the end of a row's block the bonus comes from p.
    residual = (p[:, :kmax] - q).clamp_min(0.0)  # (B, kmax, V)
    mass = residual.sum(dim=-1, keepdim=True)  # (B, kmax, 1)
    residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), p[:, :kmax])
    dist = torch.cat([torch.where(in_block[..., None], residual, p[:, :kmax]), p[:, kmax:]], dim=1)  # (B, kmax+1, V)
    fallback = sample(dist.reshape(-1, dist.shape[-1]), generator).view(batch, kmax + 1)  # (B, kmax+1)
    return accept, fallback


@dataclass
class _Row:
    """Host-side record of one request in the batch."""

    index: int  # position in the caller's list
    seq: list[int]  # committed sequence; its last element is the pending token (fed to no model yet)
    prompt_len: int
    new: list[int] = field(default_factory=list)
    counters: StepCounters | None = None
    verifier_calls: int = 1
    verifier_tokens: int = 0
    draft_calls: int = 0
    draft_tokens: int = 0
    wall_s: float = 0.0
    stop: str = "length"


def _prefill(verifier: torch.nn.Module, prompts: list[list[int]], device: torch.device, temperature: float,
             generator: torch.Generator) -> tuple[BatchState, list[int]]:
    state = BatchState(verifier, len(prompts), device)
    tokens, valid = left_padded(prompts, device)  # (B, T_max)
    logits = state.feed(tokens, valid, 1)[:, -1]  # (B, V)
    first, _ = choose(logits, temperature, generator)  # (B,)
    return state, first.tolist()


def _finish(rows: list[_Row], max_new_tokens: int, eos: int | None, now: float) -> list[int]:
    """Cut each row at EOS; stamp the rows that are done; return the indices (into rows) still running."""
    running = []
    for i, row in enumerate(rows):
        if eos is not None and eos in row.new:
            cut = row.new.index(eos) + 1
            del row.seq[len(row.seq) - (len(row.new) - cut) :]
            del row.new[cut:]
            row.stop = "eos"
        if row.stop == "eos" or len(row.new) >= max_new_tokens:
            row.wall_s = now
        else:
            running.append(i)
    return running


def _result(row: _Row, k: int, ttft: float, speculative: bool, drafter: str | None, batch: int) -> DecodeResult:
    c = row.counters
    return DecodeResult(
        tokens=row.new, k=k, prompt_len=row.prompt_len, verifier_calls=row.verifier_calls,
        draft_calls=row.draft_calls, verifier_tokens=row.verifier_tokens, draft_tokens=row.draft_tokens,
        proposed=c.proposed if c else None, accepted=c.accepted if c else None,
        accept_counts=c.accept_counts if c else None, position_proposed=c.position_proposed if c else None,
        position_accepted=c.position_accepted if c else None, wall_s=row.wall_s, ttft_s=ttft,
        stop_reason=row.stop, extra={"batch_size": batch, **({"drafter": drafter} if speculative else {})},
    )


def _baseline_batch(verifier: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                    eos: int | None, generator: torch.Generator, clock: Clock) -> list[DecodeResult]:
    """Verifier-only decoding of the batch, KV-cached, one token per row per forward."""
    device = model_device(verifier)
    start = clock.now()
    state, first = _prefill(verifier, prompts, device, temperature, generator)
    ttft = clock.now() - start
    rows = [_Row(i, list(p) + [t], len(p), [t], verifier_tokens=len(p)) for i, (p, t) in enumerate(zip(prompts, first))]
    active = _drop_finished(rows, _finish(rows, max_new_tokens, eos, ttft), state, None)
    pending = torch.tensor([r.seq[-1] for r in active], dtype=torch.long).to(device)  # (B',)
    produced: list[torch.Tensor] = []  # per step (B',) device tokens; on the host only when rows may stop
    while active:
        logits = state.feed(pending.unsqueeze(1), None, 1)[:, -1]  # (B', V)
        pending, _ = choose(logits, temperature, generator)  # (B',)
        produced.append(pending)
        for row in active:
            row.verifier_calls += 1
            row.verifier_tokens += 1
        # Without EOS every row stops together at max_new_tokens, so the loop never syncs until then.
        if eos is None and len(active[0].new) + len(produced) < max_new_tokens:
            continue
        for row, tokens in zip(active, torch.stack(produced, dim=1).tolist()):  # (B', steps)
            row.new.extend(tokens)
            row.seq.extend(tokens)
        produced = []
        keep = _finish(active, max_new_tokens, eos, clock.now() - start)
        if keep and len(keep) < len(active):
            pending = pending[torch.tensor(keep, dtype=torch.long, device=device)]  # (B'',)
        active = _drop_finished(active, keep, state, None)
    return [_result(r, 0, ttft, False, None, len(prompts)) for r in rows]


def _draft_for(drafter: Drafter, prompts: list[list[int]], device: torch.device, temperature: float,
               generator: torch.Generator) -> BatchModelDraft | PerRowDraft:
    if isinstance(drafter, ModelDrafter):
        return BatchModelDraft(drafter.model, len(prompts), device, temperature, generator)
    if drafter.uses_model:
        raise ConfigError(f"batched decoding supports ModelDrafter and model-free drafters, not "
                          f"{type(drafter).__name__}; decode it with batch size 1")
    return PerRowDraft(drafter, [len(p) for p in prompts], device, temperature, generator)


def _speculative_batch(verifier: torch.nn.Module, prompts: list[list[int]], drafter: Drafter, k: int,
                       max_new_tokens: int, temperature: float, eos: int | None, generator: torch.Generator,
                       clock: Clock) -> list[DecodeResult]:
    """Speculative decoding of the batch: every row drafts, one verifier forward checks every row's block."""
    device = model_device(verifier)
    draft = _draft_for(drafter, prompts, device, temperature, generator)
    start = clock.now()
    state, first = _prefill(verifier, prompts, device, temperature, generator)
    ttft = clock.now() - start
    rows = [_Row(i, list(p) + [t], len(p), [t], StepCounters(k), verifier_tokens=len(p))
            for i, (p, t) in enumerate(zip(prompts, first))]
    active = _drop_finished(rows, _finish(rows, max_new_tokens, eos, ttft), state, draft)
    while active:
        _speculative_step(verifier, state, draft, active, k, max_new_tokens, temperature, eos, generator)
        active = _drop_finished(active, _finish(active, max_new_tokens, eos, clock.now() - start), state, draft)
    name = drafter.describe()
    return [_result(r, k, ttft, True, name, len(prompts)) for r in rows]


def _speculative_step(verifier: torch.nn.Module, state: BatchState, draft: BatchModelDraft | PerRowDraft,
                      active: list[_Row], k: int, max_new_tokens: int, temperature: float, eos: int | None,
                      generator: torch.Generator) -> None:
    """Draft every row's block, verify all blocks in one forward, keep each row's accepted prefix."""
    budgets = [min(k, max_new_tokens - len(r.new) - 1) for r in active]  # never draft past max_new_tokens
    seqs = [r.seq for r in active]
    drafted = max(budgets) > 0  # else every row has one token left: a plain verifier step
    proposal = draft.propose(seqs, budgets) if drafted else BatchProposal(
        torch.empty((len(active), 0), dtype=torch.long, device=state.device), [0] * len(active))
    width = proposal.tokens.shape[1]
    pending = torch.tensor([[s[-1]] for s in seqs], dtype=torch.long).to(state.device)  # (B', 1)
    block = torch.cat([pending, proposal.tokens], dim=1)  # (B', 1 + kmax): [pending, d_1..d_kmax]
    valid = [[True] * (1 + n) + [False] * (width - n) for n in proposal.lengths]
    verify_start = state.length
    logits = state.feed(block, valid, width + 1)  # (B', kmax+1, V)
    accepted, committed = verify_batch(logits, proposal, temperature, generator)
    state.keep(verify_start, [1 + n for n in accepted], [1 + n for n in proposal.lengths])  # pending + accepted
    if drafted:
        draft.accept(seqs, accepted)
    for row, n, tokens, length, fed in zip(active, accepted, committed, proposal.lengths,
                                           proposal.fed or [0] * len(active)):
        if eos is not None and eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        assert row.counters is not None  # a speculative batch gives every row its counters
        row.counters.record(length, min(n, len(tokens)))
        row.verifier_calls += 1
        row.verifier_tokens += length + 1
        row.draft_calls += length if draft_uses_model(draft) else 0
        row.draft_tokens += fed
        row.seq.extend(tokens)
        row.new.extend(tokens)


def draft_uses_model(draft: BatchModelDraft | PerRowDraft) -> bool:
    return isinstance(draft, BatchModelDraft)


def _drop_finished(active: list[_Row], keep: list[int], state: BatchState,
                   draft: BatchModelDraft | PerRowDraft | None) -> list[_Row]:
    """Drop finished rows from the caches (one copy per step where rows finish); return the rows still running."""
    if keep and len(keep) < len(active):
        state.select(keep)
        if draft is not None:
            draft.select(keep)
    return [active[i] for i in keep]


def decode_batch(
    verifier: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    drafter: Drafter | None = None,
    k: int = 4,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
    eos_token_id: int | None = None,
) -> list[DecodeResult]:
    """Decode B prompts together with ``verifier``; speculatively when a ``drafter`` is given. One result per prompt.

    prompts: B lists of token ids, of any lengths (left-padded inside). Each row accepts its own number of draft
    tokens per step and stops on its own (EOS or max_new_tokens). Greedy rows equal their batch-1 ``decode`` output
    and counts; sampled rows keep the rejection-sampling guarantee. ``wall_s`` of a row is batch start to that row's
    last token (its latency within the batch); ``ttft_s`` is the batch prefill. The batch's wall time is the largest
    ``wall_s``.
    """
    rows = [list(map(int, p)) for p in prompts]
    if not rows:
        raise ConfigError("prompts is empty: give at least one prompt")
    if any(not r for r in rows):
        raise ConfigError("a prompt is empty: give at least one token per prompt (e.g. the BOS token)")
    # The longest prompt is the one that may not fit; the other checks do not depend on the prompt.
    validate(verifier, drafter, k=k, max_new_tokens=max_new_tokens, temperature=temperature,
             prompt_len=max(len(r) for r in rows))
    device = model_device(verifier)
    generator, clock = make_generator(device, seed), Clock(device)
    with torch.inference_mode():
        if drafter is None:
            return _baseline_batch(verifier, rows, max_new_tokens, float(temperature), eos_token_id, generator,
                                   clock)
        return _speculative_batch(verifier, rows, drafter, k, max_new_tokens, float(temperature), eos_token_id,
                                  generator, clock)
