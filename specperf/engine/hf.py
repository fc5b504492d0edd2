"""The seed's fast path: transformers' own assisted generation, timed the same way as the engine."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from specperf.engine.decode import as_prompt_tensor, validate
from specperf.engine.drafters.model import ModelDrafter
from specperf.engine.forward import model_device
from specperf.engine.timing import Clock
from specperf.records import DecodeResult


class _StepStreamer(BaseStreamer):
    """Records, per verification step, how many tokens assisted generation emitted and when the first arrived.

    transformers calls ``put`` once with the prompt, then once per step with the tokens that step accepted
    (the accepted draft tokens plus the verifier's own token).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._saw_prompt = False
        self.step_sizes: list[int] = []
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self._saw_prompt:
            self._saw_prompt = True
            return
        if self.first_token_at is None:
            self.first_token_at = self._clock.now()
        self.step_sizes.append(int(value.numel()))

    def end(self) -> None:
        pass


@contextlib.contextmanager
def _fixed_block(draft_model: torch.nn.Module, k: int) -> Iterator[None]:
    """Fix the assistant's block at exactly k tokens for the duration of one call, then restore its config.

    transformers v5 reads these settings from the *assistant's* generation_config, and defaults to 20 drafted
    tokens, a heuristic schedule and a confidence early stop (threshold 0.4): set all three so the comparison with
    specperf's engine is like for like.
    """
    saved = draft_model.generation_config
    config = copy.deepcopy(saved)
    config.num_assistant_tokens = k
    config.num_assistant_tokens_schedule = "constant"
    config.assistant_confidence_threshold = 0.0
    draft_model.generation_config = config
    try:
        yield
    finally:
        draft_model.generation_config = saved


def _generation_kwargs(max_new_tokens: int, temperature: float, eos_token_id: int | None) -> dict[str, Any]:
    kwargs: dict[str, object] = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": 0,
        "do_sample": temperature > 0,
        "eos_token_id": eos_token_id,
        "pad_token_id": eos_token_id if eos_token_id is not None else 0,
    }
    if temperature > 0:
        kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
    return kwargs


def _accept_histogram(step_sizes: list[int], k: int) -> tuple[int, list[int]]:
    accepted_per_step = [size - 1 for size in step_sizes]
    counts = [0] * (k + 1)
    for n in accepted_per_step:
        counts[min(max(n, 0), k)] += 1
    return sum(accepted_per_step), counts


def hf_assisted_decode(
    verifier: torch.nn.Module,
    prompt_ids: torch.Tensor | Sequence[int],
    draft_model: torch.nn.Module,
    *,
    k: int = 4,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
    eos_token_id: int | None = None,
) -> DecodeResult:
    """Decode one prompt with ``verifier.generate(assistant_model=draft_model)`` at a constant block size k.

    Fills tokens, wall time and TTFT, and the per-step accepted counts that a streamer reveals. The number of
    proposed tokens is not exposed, so ``proposed`` (and with it the acceptance rate) is None: unknown, not zero.
    The audit path recomputes acceptance from the tokens.
    """
    device = model_device(verifier)
    prompt = as_prompt_tensor(prompt_ids, device)
    validate(verifier, ModelDrafter(draft_model), k=k, max_new_tokens=max_new_tokens, temperature=temperature,
             prompt_len=prompt.shape[1])
    clock = Clock(device)
    streamer = _StepStreamer(clock)
    if seed is not None:
        torch.manual_seed(seed)  # generate() samples from the global generator
    kwargs = _generation_kwargs(max_new_tokens, float(temperature), eos_token_id)
    with torch.inference_mode(), _fixed_block(draft_model, k):
        start = clock.now()
        output = verifier.generate(prompt, attention_mask=torch.ones_like(prompt), assistant_model=draft_model,
                                   streamer=streamer, **kwargs)
        wall = clock.now() - start
    tokens = output[0, prompt.shape[1]:].tolist()
    stop = "length"
    if eos_token_id is not None and eos_token_id in tokens:
        tokens, stop = tokens[: tokens.index(eos_token_id) + 1], "eos"
    accepted, counts = _accept_histogram(streamer.step_sizes, k)
    ttft = (streamer.first_token_at - start) if streamer.first_token_at is not None else wall
    return DecodeResult(
        tokens=tokens, k=k, prompt_len=prompt.shape[1], verifier_calls=len(streamer.step_sizes),
        draft_calls=None, verifier_tokens=None, draft_tokens=None,  # not exposed by transformers
        proposed=None, accepted=accepted, accept_counts=counts, position_proposed=None, position_accepted=None,
        wall_s=wall, ttft_s=ttft, stop_reason=stop, backend="hf-assisted",
    )
