"""Batched decoding: B prompts of different lengths together, each row accepting its own number of draft tokens.

The forward is batch 1's: the model's :class:`~specperf.engine.forward.ModelForward` (the lean GPT-2 forward
where it applies, else transformers'), given the batch's attention mask and position ids.

Cache design: append, mask and compact. All rows of a model share one physical cache (``RollbackCache``, in-place
appends) whose columns are token slots; a (B, L) mask says which slots hold a live token of each row, and each row
keeps its own next position, from which its position ids come. A step feeds the same number of slots to every row
(left- or right-padded with masked dummies); slots a row rejects stay in place, masked, and the physical tail that
no row kept is rolled back like a batch-1 cache. So rows advance independently, nothing waits for the slowest
row's acceptance, and only the models' standard inputs are used (``attention_mask`` + ``position_ids``): any
causal LM that takes a DynamicCache works. Rejected slots inside the cache would make every row's attention follow
the row that accepted least, so once they pile up past a share of the longest row, each row's live slots are
gathered to the end of a cache as long as the longest row (``BatchState.compact_if_needed``): one gather,
amortised over the steps that left them, instead of a per-row scatter into a static cache with custom masks per
model. Rows that finish (EOS or max_new_tokens) leave the batch: their cache rows are dropped once.

Host syncs: a speculative step makes one, the acceptance decision (accepted counts, drafts and the verifier's
tokens in one ``tolist``). Masks, positions, the pending tokens and the drafted lengths stay on the device and are
updated from device values; Python values reach the device only through asynchronous copies
(:func:`~specperf.engine.transfer.to_device`). The verifier-only batch syncs once per step where rows can stop at
EOS, and never otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from specperf.engine.batch_cache import BatchState, Slots, left_padded
from specperf.engine.batch_draft import BatchModelDraft, BatchProposal, PerRowDraft
from specperf.engine.decode import validate
from specperf.engine.drafters.base import Drafter
from specperf.engine.drafters.model import ModelDrafter
from specperf.engine.forward import ModelForward, as_forward, model_device
from specperf.engine.sampling import choose, make_generator, sample, to_probs
from specperf.engine.step_counters import StepCounters
from specperf.engine.timing import Clock
from specperf.engine.transfer import to_device
from specperf.errors import ConfigError
from specperf.records import DecodeResult


@dataclass
class Verdict:
    """One verify of every row: on the host, the accepted draft counts and the committed tokens (accepted drafts +
    the verifier's own); on the device, the counts and each row's last committed token (the next pending)."""

    counts: list[int]
    committed: list[list[int]]
    counts_dev: torch.Tensor  # (B,)
    pending_dev: torch.Tensor  # (B,)


def verify_batch(logits: torch.Tensor, proposal: BatchProposal, temperature: float,
                 generator: torch.Generator) -> Verdict:
    """Per row: accepted draft count n_b and committed tokens. One host sync.

    logits: (B, kmax+1, V) verifier logits at [pending, d_1..d_kmax]; row b's block is its first lengths[b] drafts.
    """
    draft = proposal.tokens  # (B, kmax)
    batch, kmax = draft.shape
    in_block = torch.arange(kmax, device=draft.device) < proposal.lengths_dev[:, None]  # (B, kmax)
    if temperature == 0.0:
        # Greedy: p_i = argmax; accept d_{i+1} while it equals p_i; then emit p_n.
        fallback = logits.argmax(dim=-1)  # (B, kmax+1)
        ok = (draft == fallback[:, :kmax]) & in_block  # (B, kmax)
    else:
        ok, fallback = rejection_sample(logits, proposal, temperature, generator, in_block)
    n = ok.long().cumprod(dim=1).sum(dim=1)  # (B,) leading accepted drafts
    pending = fallback.gather(1, n[:, None])[:, 0]  # (B,) the verifier's own token after the accepted drafts
    host = torch.cat([n[:, None], draft, fallback], dim=1).tolist()  # the step's one host sync
    counts = [row[0] for row in host]
    committed = [row[1 : 1 + c] + [row[1 + kmax + c]] for row, c in zip(host, counts)]
    return Verdict(counts, committed, n, pending)


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

    def commit(self, tokens: list[int], eos: int | None) -> list[int]:
        """Append this step's tokens, cut after EOS (which stops the row); returns what was kept. O(len(tokens)):
        only the new tokens are looked at."""
        if eos is not None and eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
            self.stop = "eos"
        self.seq.extend(tokens)
        self.new.extend(tokens)
        return tokens

    def done(self, max_new_tokens: int) -> bool:
        return self.stop == "eos" or len(self.new) >= max_new_tokens


class _Batch:
    """The rows still running, their device-side pending tokens, and the caches that hold them."""

    def __init__(self, rows: list[_Row], pending: torch.Tensor, state: BatchState,
                 draft: BatchModelDraft | PerRowDraft | None) -> None:
        self.rows, self.pending, self.state, self.draft = rows, pending, state, draft  # pending: (B,)

    def drop_finished(self, max_new_tokens: int, clock: Clock, start: float) -> None:
        """Stamp the rows that are done and drop them from the caches (one gather per step where rows finish)."""
        keep = [i for i, row in enumerate(self.rows) if not row.done(max_new_tokens)]
        if len(keep) == len(self.rows):
            return
        now = clock.now() - start
        for row in self.rows:
            if row.done(max_new_tokens):
                row.wall_s = now
        if keep:
            index = to_device(keep, self.state.device)  # (B',) one copy for every cache and drafter
            self.state.select(keep, index)
            self.pending = self.pending[index]
            if self.draft is not None:
                self.draft.select(keep, index)
        self.rows = [self.rows[i] for i in keep]


def _prefill(verifier: ModelForward, prompts: list[list[int]], device: torch.device, temperature: float,
             generator: torch.Generator) -> tuple[BatchState, torch.Tensor, list[int]]:
    state = BatchState(verifier, len(prompts), device)
    tokens, slots = left_padded(prompts, device)  # (B, T_max)
    logits = state.feed(tokens, slots, 1)[:, -1]  # (B, V)
    first, _ = choose(logits, temperature, generator)  # (B,)
    return state, first, first.tolist()


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


def _start(verifier: ModelForward, prompts: list[list[int]], temperature: float, eos: int | None,
           generator: torch.Generator, clock: Clock, k: int | None,
           draft: BatchModelDraft | PerRowDraft | None) -> tuple[_Batch, list[_Row], float, float]:
    """Prefill every row; returns the batch, all rows, the start time and the TTFT."""
    device = model_device(verifier.model)
    start = clock.now()
    state, first, first_host = _prefill(verifier, prompts, device, temperature, generator)
    ttft = clock.now() - start
    rows = [_Row(i, list(p), len(p), verifier_tokens=len(p), counters=StepCounters(k) if k else None)
            for i, p in enumerate(prompts)]
    for row, token in zip(rows, first_host):
        row.commit([token], eos)
    return _Batch(rows, first, state, draft), rows, start, ttft


def _baseline_batch(verifier: ModelForward, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                    eos: int | None, generator: torch.Generator, clock: Clock) -> list[DecodeResult]:
    """Verifier-only decoding of the batch, KV-cached, one token per row per forward."""
    batch, rows, start, ttft = _start(verifier, prompts, temperature, eos, generator, clock, None, None)
    batch.drop_finished(max_new_tokens, clock, start)
    produced: list[torch.Tensor] = []  # per step (B',) device tokens; on the host only when rows may stop
    while batch.rows:
        slots = Slots.full(len(batch.rows), 1)
        logits = batch.state.feed(batch.pending.unsqueeze(1), slots, 1)[:, -1]  # (B', V)
        batch.pending, _ = choose(logits, temperature, generator)  # (B',)
        produced.append(batch.pending)
        for row in batch.rows:
            row.verifier_calls += 1
            row.verifier_tokens += 1
        # Without EOS every row stops together at max_new_tokens, so the loop never syncs until then.
        if eos is None and len(batch.rows[0].new) + len(produced) < max_new_tokens:
            continue
        for row, tokens in zip(batch.rows, torch.stack(produced, dim=1).tolist()):  # (B', steps): the step's sync
            row.commit(tokens, eos)
        produced = []
        batch.drop_finished(max_new_tokens, clock, start)
    return [_result(r, 0, ttft, False, None, len(prompts)) for r in rows]


def _draft_for(drafter: Drafter, prompts: list[list[int]], device: torch.device, temperature: float,
               generator: torch.Generator) -> BatchModelDraft | PerRowDraft:
    if isinstance(drafter, ModelDrafter):
        return BatchModelDraft(drafter.forward, prompts, device, temperature, generator)
    if drafter.uses_model:
        raise ConfigError(f"batched decoding supports ModelDrafter and model-free drafters, not "
                          f"{type(drafter).__name__}; decode it with batch size 1")
    return PerRowDraft(drafter, [len(p) for p in prompts], device, temperature, generator)


def _speculative_batch(verifier: ModelForward, prompts: list[list[int]], drafter: Drafter, k: int,
                       max_new_tokens: int, temperature: float, eos: int | None, generator: torch.Generator,
                       clock: Clock) -> list[DecodeResult]:
    """Speculative decoding of the batch: every row drafts, one verifier forward checks every row's block."""
    device = model_device(verifier.model)
    draft = _draft_for(drafter, prompts, device, temperature, generator)
    batch, rows, start, ttft = _start(verifier, prompts, temperature, eos, generator, clock, k, draft)
    batch.drop_finished(max_new_tokens, clock, start)
    while batch.rows:
        _speculative_step(batch, k, max_new_tokens, temperature, eos, generator)
        batch.drop_finished(max_new_tokens, clock, start)
    name = drafter.describe()
    return [_result(r, k, ttft, True, name, len(prompts)) for r in rows]


def _propose(batch: _Batch, k: int, max_new_tokens: int) -> BatchProposal:
    """Every row's block: at most k drafts, never past max_new_tokens (the verifier adds one token of its own)."""
    budgets = [min(k, max_new_tokens - len(r.new) - 1) for r in batch.rows]
    state, draft = batch.state, batch.draft
    if max(budgets) <= 0:  # every row has one token left: a plain verifier step
        return BatchProposal.empty(len(budgets), state.device)
    if isinstance(draft, BatchModelDraft):
        # The budgets on the device without a copy: k, or fewer on the rows whose budget is below it.
        lengths_dev = torch.full((len(budgets),), k, dtype=torch.long, device=state.device)
        if min(budgets) < k:
            lengths_dev = to_device(budgets, state.device)  # (B,) asynchronous, near max_new_tokens only
        return draft.propose(batch.pending, budgets, lengths_dev)
    assert isinstance(draft, PerRowDraft)
    return draft.propose([r.seq for r in batch.rows], budgets)


def _speculative_step(batch: _Batch, k: int, max_new_tokens: int, temperature: float, eos: int | None,
                      generator: torch.Generator) -> None:
    """Draft every row's block, verify all blocks in one forward, keep each row's accepted prefix."""
    state, active = batch.state, batch.rows
    seqs_before = [len(r.seq) for r in active]
    proposal = _propose(batch, k, max_new_tokens)
    width = proposal.tokens.shape[1]
    block = torch.cat([batch.pending[:, None], proposal.tokens], dim=1)  # (B', 1 + kmax): [pending, d_1..d_kmax]
    fed, fed_dev = [1 + n for n in proposal.lengths], 1 + proposal.lengths_dev  # pending + drafts, (B',)
    verify_start = state.length
    logits = state.feed(block, Slots.prefix(fed, fed_dev, width + 1), width + 1)  # (B', kmax+1, V)
    verdict = verify_batch(logits, proposal, temperature, generator)
    state.keep(verify_start, 1 + verdict.counts_dev, fed_dev, [1 + n for n in verdict.counts], fed)
    state.compact_if_needed()
    batch.pending = verdict.pending_dev
    if isinstance(batch.draft, BatchModelDraft) and width:
        batch.draft.accept(proposal, verdict.counts_dev, verdict.counts)
    elif isinstance(batch.draft, PerRowDraft) and width:
        batch.draft.accept(seqs_before, verdict.counts)
    uses_model = isinstance(batch.draft, BatchModelDraft)
    for row, n, tokens, length, fed_tokens in zip(active, verdict.counts, verdict.committed, proposal.lengths,
                                                  proposal.fed or [0] * len(active)):
        kept = row.commit(tokens, eos)
        assert row.counters is not None  # a speculative batch gives every row its counters
        row.counters.record(length, min(n, len(kept)))
        row.verifier_calls += 1
        row.verifier_tokens += length + 1
        row.draft_calls += length if uses_model else 0
        row.draft_tokens += fed_tokens


def decode_batch(
    verifier: torch.nn.Module | ModelForward,
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
    run = as_forward(verifier)
    validate(run.model, drafter, k=k, max_new_tokens=max_new_tokens, temperature=temperature,
             prompt_len=max(len(r) for r in rows))
    device = model_device(run.model)
    generator, clock = make_generator(device, seed), Clock(device)
    with torch.inference_mode():
        if drafter is None:
            return _baseline_batch(run, rows, max_new_tokens, float(temperature), eos_token_id, generator,
                                   clock)
        return _speculative_batch(run, rows, drafter, k, max_new_tokens, float(temperature), eos_token_id,
                                  generator, clock)
