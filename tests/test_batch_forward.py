"""The batched engine's forward and discipline: the lean GPT-2 forward at batch > 1 is bitwise transformers' with
the batch's masks and positions; a speculative step syncs the host once; dead slots are compacted away.

The bitwise checks run on the CPU, or on the device SPECPERF_TEST_DEVICE names (tools/gpu_check.py runs this file
with SPECPERF_TEST_DEVICE=cuda).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import specperf
from specperf.engine import batch_cache
from specperf.engine.batch import decode_batch
from specperf.engine.batch_cache import BatchState, Slots, left_padded
from specperf.engine.forward import ModelForward
from tests.test_batch import BATCH_PROMPTS, FIELDS, _noisy
from tests.tiny_models import tiny_gpt2

DEVICE = torch.device(os.environ.get("SPECPERF_TEST_DEVICE", "cpu"))

# Per step: (drafted width, per-row block lengths as a pattern, per-row kept counts as a pattern): blocks of
# different lengths per row, then rollbacks of different depths, so that masked slots sit inside the cache.
STEPS = [(4, [4, 2, 0, 3], [5, 1, 1, 2]), (1, [1], [2]), (3, [3, 3, 1, 0], [1, 4, 2, 1]), (4, [4], [3]),
         (2, [2, 0], [3, 1])]


def _cycle(pattern: list[int], batch: int) -> list[int]:
    return [pattern[b % len(pattern)] for b in range(batch)]


def _logits_along(model: torch.nn.Module, path: str, prompts: list[list[int]], compact: bool) -> list[torch.Tensor]:
    """The logits of a ragged prefill, then of blocks with per-row live lengths, each followed by a rollback of
    per-row depth (and a compaction, when asked), through ``path``'s forward."""
    batch = len(prompts)
    state = BatchState(ModelForward(model, path), batch, DEVICE)
    generator = torch.Generator().manual_seed(0)
    out = []
    with torch.inference_mode():
        tokens, slots = left_padded(prompts, DEVICE)  # (B, T)
        out.append(state.feed(tokens, slots, 1))  # (B, 1, V)
        for width, lengths, keeps in STEPS:
            live = [1 + n for n in _cycle(lengths, batch)]
            live = [min(n, width + 1) for n in live]
            kept = [min(k, n) for k, n in zip(_cycle(keeps, batch), live)]
            block = torch.randint(2, 90, (batch, width + 1), generator=generator).to(DEVICE)  # (B, w)
            start = state.length
            live_dev, kept_dev = (torch.tensor(x, device=DEVICE) for x in (live, kept))
            out.append(state.feed(block, Slots.prefix(live, live_dev, width + 1), width + 1))  # (B, w, V)
            state.keep(start, kept_dev, live_dev, kept, live)
            if compact:
                state.compact_if_needed()
    return out


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize("compact", [False, True], ids=["masked", "compacted"])
@pytest.mark.parametrize("batch", [2, 8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_lean_forward_at_batch_is_bitwise_transformers(dtype: str, batch: int, compact: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if compact:  # compact whenever a slot is dead, so that every step runs on a freshly gathered cache
        monkeypatch.setattr(batch_cache, "COMPACT_MIN_SLOTS", 0)
        monkeypatch.setattr(batch_cache, "COMPACT_FRACTION", 0.0)
    model = tiny_gpt2(n_layer=3, n_embd=64, seed=3).to(DEVICE, DTYPES[dtype])
    assert ModelForward(model).lean is not None
    prompts = [BATCH_PROMPTS[b % len(BATCH_PROMPTS)] for b in range(batch)]  # 1 to 70 tokens
    lean = _logits_along(model, "lean", prompts, compact)
    reference = _logits_along(model, "transformers", prompts, compact)
    for step, (got, want) in enumerate(zip(lean, reference, strict=True)):
        assert got.shape == want.shape and torch.equal(got, want), f"step {step}"


@pytest.mark.parametrize("kind", ["model", "prompt-lookup"])
def test_rows_equal_batch_one_when_every_step_compacts(verifier, kind, monkeypatch):
    monkeypatch.setattr(batch_cache, "COMPACT_MIN_SLOTS", 0)
    monkeypatch.setattr(batch_cache, "COMPACT_FRACTION", 0.0)
    compactions = Counter[str]()
    original = BatchState.compact_if_needed

    def counting(self: BatchState) -> None:
        before = self.compactions
        original(self)
        compactions["made"] += self.compactions - before
        # Dead slots never outlive the step: the physical cache is as long as the longest row.
        assert self.length == max(self.live) or self.compactions == before

    monkeypatch.setattr(BatchState, "compact_if_needed", counting)
    draft = _noisy(verifier)

    def drafter() -> specperf.Drafter:
        return specperf.ModelDrafter(draft) if kind == "model" else specperf.PromptLookupDrafter(max_ngram=3)

    batched = decode_batch(verifier, BATCH_PROMPTS, drafter=drafter(), k=4, max_new_tokens=30)
    assert compactions["made"] > 0
    for i, (prompt, row) in enumerate(zip(BATCH_PROMPTS, batched)):
        alone = specperf.decode(verifier, prompt, drafter=drafter(), k=4, max_new_tokens=30)
        for name in FIELDS:
            assert getattr(row, name) == getattr(alone, name), f"row {i}: {name}"


def test_the_default_compaction_bounds_the_dead_slots(verifier, monkeypatch):
    """With the defaults, no step leaves more dead slots than the bound allows."""
    draft = _noisy(verifier, scale=0.6)  # rejects often: many dead slots
    worst: list[int] = []
    original = BatchState.compact_if_needed

    def watching(self: BatchState) -> None:
        original(self)
        longest = max(self.live)
        worst.append(self.length - longest - max(batch_cache.COMPACT_MIN_SLOTS,
                                                  int(batch_cache.COMPACT_FRACTION * longest)))

    monkeypatch.setattr(BatchState, "compact_if_needed", watching)
    decode_batch(verifier, [[5, 6, 7]] * 4 + [[9] * 30] * 4, drafter=specperf.ModelDrafter(draft), k=4,
                 max_new_tokens=120)
    assert worst and max(worst) <= 0


# Calls that make the host wait for the device where it is a GPU: reading a value back, a data-dependent shape,
# and a tensor made from host data (a blocking copy, unless it goes through the engine's asynchronous to_device).
HOST_READS = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero",
              "tensor", "as_tensor", "masked_select", "unique"}


class SyncCounter(TorchFunctionMode):
    """Counts the calls in HOST_READS made by specperf's engine (not those of torch or transformers internals,
    nor the asynchronous copies of specperf.engine.transfer)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            caller = sys._getframe(1)
            path = caller.f_code.co_filename
            if "specperf" + os.sep + "engine" in path and not path.endswith("transfer.py"):
                self.sites[f"{os.path.basename(path)}:{caller.f_lineno} {name}"] += 1
        return func(*args, **(kwargs or {}))


def _syncs_and_steps(run: Any) -> tuple[int, int, Counter[str]]:
    counter = SyncCounter()
    with counter:
        results = run()
    steps = max(r.verifier_calls for r in results) - 1  # the prefill is the first call
    return sum(counter.sites.values()), steps, counter.sites


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("kind", ["model", "prompt-lookup", "baseline-eos"])
def test_a_step_syncs_the_host_at_most_once(verifier, kind, batch):
    """The syncs a longer decode adds, per step it adds: at most one (the acceptance decision; for verifier-only
    decoding with EOS, the look at the step's tokens), at batch 1 (``decode``) and batch 8 (``decode_batch``)."""
    draft = _noisy(verifier)
    prompts = BATCH_PROMPTS[:batch] if batch > 1 else [BATCH_PROMPTS[2]]

    def run(max_new: int) -> Any:
        drafter = None
        if kind != "baseline-eos":
            drafter = specperf.ModelDrafter(draft) if kind == "model" else specperf.PromptLookupDrafter(max_ngram=3)
        options: dict[str, Any] = dict(drafter=drafter, k=4, max_new_tokens=max_new,
                                       eos_token_id=2 if drafter is None else None)
        if batch == 1:
            return lambda: [specperf.decode(verifier, prompts[0], **options)]
        return lambda: decode_batch(verifier, prompts, **options)

    short_syncs, short_steps, _ = _syncs_and_steps(run(12))
    long_syncs, long_steps, sites = _syncs_and_steps(run(48))
    assert long_steps > short_steps
    assert long_syncs - short_syncs <= long_steps - short_steps, sites


def test_the_verifier_only_batch_without_eos_syncs_once_at_the_end(verifier):
    syncs, steps, sites = _syncs_and_steps(lambda: decode_batch(verifier, BATCH_PROMPTS, max_new_tokens=24))
    assert steps == 23 and syncs <= 3, sites  # the prefill's first tokens, the tokens at the end


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_lean_forward_is_bitwise_transformers_on_equal_prompts(dtype: str) -> None:
    """Equal prompts: the batch is unpadded until a row rejects, and again after a trim drops every dead slot;
    then no mask is passed, as transformers' sdpa path drops an all-true one."""
    model = tiny_gpt2(n_layer=3, n_embd=64, seed=3).to(DEVICE, DTYPES[dtype])
    prompts = [BATCH_PROMPTS[1][:20]] * 2
    lean = _logits_along(model, "lean", prompts, compact=False)
    reference = _logits_along(model, "transformers", prompts, compact=False)
    for step, (got, want) in enumerate(zip(lean, reference, strict=True)):
        assert got.shape == want.shape and torch.equal(got, want), f"step {step}"


class _NoProposals(specperf.Drafter):
    """A model-free drafter that never finds anything to propose."""

    name = "nothing"

    def start(self, prompt_len: int, *, device: torch.device, temperature: float,
              generator: torch.Generator | None) -> None:
        pass

    def propose(self, seq: list[int], pending: torch.Tensor, k: int) -> specperf.engine.drafters.base.Proposal:
        from specperf.engine.drafters.base import Proposal

        return Proposal(tokens=torch.empty(0, dtype=torch.long))


def test_blocks_no_row_filled_leave_no_slots_behind(verifier, monkeypatch):
    """A step whose drafter proposed nothing in any row feeds a dummy slot; it is rolled back, so the cache stays
    as long as its rows and unmasked."""
    seen: list[tuple[int, int, bool]] = []
    original = BatchState.compact_if_needed

    def watching(self: BatchState) -> None:
        seen.append((self.length, max(self.live), self.padded))
        original(self)

    monkeypatch.setattr(BatchState, "compact_if_needed", watching)
    rows = decode_batch(verifier, [[5, 6, 7, 8]] * 2, drafter=_NoProposals(), k=3, max_new_tokens=12)
    assert rows[0].tokens == specperf.decode(verifier, [5, 6, 7, 8], max_new_tokens=12).tokens
    assert seen and all(length == longest and not padded for length, longest, padded in seen), seen
