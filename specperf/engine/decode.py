"""The decoding ladder: validate -> prefill -> (baseline token | speculative step) loop -> DecodeResult."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from specperf.config.schema import MAX_K
from specperf.engine.cache import RollbackCache, rollback
from specperf.engine.drafters.base import Drafter, Proposal
from specperf.engine.drafters.model import ModelDrafter
from specperf.engine.forward import ModelForward, as_forward, context_window, model_device, new_cache, vocab_size
from specperf.engine.sampling import choose, make_generator
from specperf.engine.step_counters import StepCounters
from specperf.engine.timing import Clock
from specperf.engine.verify import Verdict, verify_greedy, verify_sampling
from specperf.errors import ConfigError, ContextLengthError, ModelError
from specperf.records import DecodeResult


@dataclass
class _Request:
    """Everything one decode call needs besides the models."""

    prompt: torch.Tensor  # (1, T) int64 on the verifier's device
    max_new_tokens: int
    temperature: float
    eos_token_id: int | None
    generator: torch.Generator
    clock: Clock


def as_prompt_tensor(prompt_ids: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    """Accept a (1, T) or (T,) tensor or a list of ints; return (1, T) int64 on ``device``."""
    ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)  # (1, T)
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ConfigError(
            f"prompt_ids must be a list of ints or a (1, T) tensor, got shape {tuple(ids.shape)}; "
            "decode one prompt per call"
        )
    if ids.shape[1] == 0:
        raise ConfigError("prompt_ids is empty: give at least one token (e.g. the BOS token)")
    return ids.to(device)


def _check_fits(model: torch.nn.Module, role: str, prompt_len: int, max_new_tokens: int) -> None:
    window = context_window(model)
    if window is not None and prompt_len + max_new_tokens > window:
        raise ContextLengthError(
            f"the {role}'s context window is {window} tokens, but the prompt ({prompt_len} tokens) plus "
            f"max_new_tokens ({max_new_tokens}) needs {prompt_len + max_new_tokens}; shorten the prompt "
            "(the data layer's truncate-abstract policy does this) or lower max_new_tokens"
        )


def validate(
    verifier: torch.nn.Module,
    drafter: Drafter | None,
    *,
    k: int,
    max_new_tokens: int,
    temperature: float,
    prompt_len: int,
) -> None:
    """Refuse inputs the engine cannot decode honestly, with a message that names the fix."""
    if drafter is not None and not (isinstance(k, int) and 1 <= k <= MAX_K):
        raise ConfigError(f"k (draft block size) must be an integer in 1..{MAX_K}, got {k!r}")
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not (temperature >= 0.0 and temperature != float("inf")):
        raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    _check_fits(verifier, "verifier", prompt_len, max_new_tokens)
    if drafter is None:
        return
    if isinstance(drafter, ModelDrafter):
        _check_fits(drafter.model, "draft model", prompt_len, max_new_tokens)
    draft_vocab, verifier_vocab = drafter.vocab_size(), vocab_size(verifier)
    if draft_vocab is not None and draft_vocab != verifier_vocab:
        raise ModelError(
            f"draft '{drafter.describe()}' has a vocabulary of {draft_vocab} tokens but the verifier has "
            f"{verifier_vocab}; speculative decoding needs one shared tokenizer: pick a draft from the verifier's "
            "family"
        )


def _prefill(verifier: ModelForward, cache: RollbackCache, req: _Request) -> torch.Tensor:
    """Feed the prompt; return the first new token (1,). Its logits are the only ones projected."""
    logits = verifier(req.prompt, cache, 1)[:, -1]  # (1, V)
    token, _ = choose(logits, req.temperature, req.generator)  # (1,)
    return token


def _baseline_loop(verifier: ModelForward, req: _Request) -> DecodeResult:
    """Verifier-only decoding, KV-cached, one token per forward: the denominator of every speedup."""
    cache = new_cache()
    start = req.clock.now()
    token = _prefill(verifier, cache, req)
    first = int(token.item())
    ttft = req.clock.now() - start
    produced = [token]
    stop = "eos" if first == req.eos_token_id else "length"
    while stop == "length" and len(produced) < req.max_new_tokens:
        logits = verifier(token.view(1, 1), cache, 1)[:, -1]  # (1, V)
        token, _ = choose(logits, req.temperature, req.generator)  # (1,)
        produced.append(token)
        # Stopping at EOS needs its value on the host; without an EOS id the loop never syncs.
        if req.eos_token_id is not None and int(token.item()) == req.eos_token_id:
            stop = "eos"
    tokens = torch.cat(produced).tolist()
    wall = req.clock.now() - start
    n = len(tokens)
    return DecodeResult(
        tokens=tokens, k=0, prompt_len=req.prompt.shape[1], verifier_calls=n, draft_calls=0,
        verifier_tokens=req.prompt.shape[1] + n - 1, draft_tokens=0,
        proposed=None, accepted=None, accept_counts=None, position_proposed=None, position_accepted=None,
        wall_s=wall, ttft_s=ttft, stop_reason=stop,
    )


def _empty_proposal(device: torch.device) -> Proposal:
    return Proposal(tokens=torch.empty(0, dtype=torch.long, device=device))


def _speculative_step(
    verifier: ModelForward,
    cache: RollbackCache,
    drafter: Drafter,
    seq: list[int],
    pending: torch.Tensor,
    block_k: int,
    req: _Request,
) -> tuple[Verdict, Proposal]:
    """Draft up to ``block_k`` tokens, verify them in one verifier forward, roll both caches back to the verdict."""
    proposal = drafter.propose(seq, pending, block_k) if block_k else _empty_proposal(pending.device)
    n_drafted = len(proposal)
    block = torch.cat([pending, proposal.tokens]).unsqueeze(0)  # (1, k'+1): [pending, d_1..d_k']
    logits = verifier(block, cache, n_drafted + 1)[0]  # (k'+1, V)
    if req.temperature == 0.0:
        verdict = verify_greedy(logits, proposal.tokens)
    else:
        verdict = verify_sampling(logits, proposal.tokens, proposal.probs, req.temperature, req.generator)
    # The verifier cache now holds pending + k' drafts; keep pending + the accepted ones.
    rollback(cache, n_drafted - verdict.n_accepted)
    drafter.rollback(len(seq) + verdict.n_accepted)
    return verdict, proposal


def _cut_at_eos(tokens: list[int], eos_token_id: int | None) -> tuple[list[int], bool]:
    if eos_token_id is not None and eos_token_id in tokens:
        return tokens[: tokens.index(eos_token_id) + 1], True
    return tokens, False


def _speculative_loop(verifier: ModelForward, drafter: Drafter, k: int, req: _Request) -> DecodeResult:
    """Speculative decoding of one request; the drafter proposes, one verifier forward checks each block."""
    counters = StepCounters(k)
    cache = new_cache()
    seq = req.prompt[0].tolist()  # committed sequence; its last element is the pending token
    prompt_len = len(seq)
    drafter.start(prompt_len, device=req.prompt.device, temperature=req.temperature, generator=req.generator)
    start = req.clock.now()
    pending = _prefill(verifier, cache, req)
    new, hit_eos = _cut_at_eos([int(pending.item())], req.eos_token_id)
    ttft = req.clock.now() - start
    seq.extend(new)
    verifier_calls, draft_calls = 1, 0
    verifier_tokens, draft_tokens = prompt_len, 0
    while not hit_eos and len(new) < req.max_new_tokens:
        # A step emits at most k'+1 tokens: never draft past max_new_tokens.
        block_k = min(k, req.max_new_tokens - len(new) - 1)
        verdict, proposal = _speculative_step(verifier, cache, drafter, seq, pending, block_k, req)
        committed, hit_eos = _cut_at_eos(verdict.committed, req.eos_token_id)
        counters.record(len(proposal), min(verdict.n_accepted, len(committed)))
        verifier_calls += 1
        draft_calls += proposal.forwards
        verifier_tokens += len(proposal) + 1
        draft_tokens += proposal.fed
        seq.extend(committed)
        new.extend(committed)
        pending = verdict.next_token
    wall = req.clock.now() - start
    return DecodeResult(
        tokens=new, k=k, prompt_len=prompt_len, verifier_calls=verifier_calls, draft_calls=draft_calls,
        verifier_tokens=verifier_tokens, draft_tokens=draft_tokens,
        proposed=counters.proposed, accepted=counters.accepted, accept_counts=counters.accept_counts,
        position_proposed=counters.position_proposed, position_accepted=counters.position_accepted,
        wall_s=wall, ttft_s=ttft, stop_reason="eos" if hit_eos else "length",
        extra={"drafter": drafter.describe()},
    )


def decode(
    verifier: torch.nn.Module | ModelForward,
    prompt_ids: torch.Tensor | Sequence[int],
    *,
    drafter: Drafter | None = None,
    k: int = 4,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
    eos_token_id: int | None = None,
) -> DecodeResult:
    """Decode one prompt with ``verifier``; speculatively when a ``drafter`` is given.

    verifier: the model, or its :class:`ModelForward` (e.g. a loaded model's ``forward``), which fixes the forward it
    runs and is built once; a bare module runs the lean GPT-2 forward where it supports it, checked at each call.
    prompt_ids: (1, T) or (T,) tensor, or a list of T token ids. k: draft block size (ignored without a drafter).
    temperature 0 is greedy (token-for-token the verifier's output); > 0 samples with rejection sampling, so the
    output distribution is the verifier's. Stops at ``eos_token_id`` (emitted) or after ``max_new_tokens``.
    """
    run = as_forward(verifier)
    device = model_device(run.model)
    prompt = as_prompt_tensor(prompt_ids, device)
    validate(run.model, drafter, k=k, max_new_tokens=max_new_tokens, temperature=temperature,
             prompt_len=prompt.shape[1])
    req = _Request(prompt, max_new_tokens, float(temperature), eos_token_id, make_generator(device, seed),
                   Clock(device))
    with torch.inference_mode():
        if drafter is None:
            return _baseline_loop(run, req)
        return _speculative_loop(run, drafter, k, req)
