"""The suite's models and prompts: each model loaded once per session, each slice tokenized and fitted once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from specperf.bench.models import LoadedModel, check_same_tokenizer, load_model, resolve_device
from specperf.config import SuiteConfig
from specperf.data import apply_slice, fit_prompts, load_records
from specperf.data.fit import Tokenizer
from specperf.engine.forward import context_window

DEFAULT_CONTEXT = 1024  # GPT-2's window, for a model whose config states none


@dataclass
class PromptSet:
    """A slice's prompts, tokenized and fitted to the context window once per session."""

    slice: str
    ids: list[list[int]]
    record_ids: list[str]
    n_shortened: int


class ModelStore:
    """Session cache of one suite run: models by name (on the suite's device and dtype, with its forward) and prompts
    by slice."""

    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self.dataset, self.generation = config.dataset, config.generation
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self._models: dict[str, LoadedModel] = {}
        self._prompts: dict[str, PromptSet] = {}

    def model(self, name: str) -> LoadedModel:
        if name not in self._models:
            self._models[name] = load_model(name, device=str(self.device), dtype=self.config.dtype,
                                            trust_remote_code=self.config.trust_remote_code,
                                            forward=self.config.forward)
            if name != self.config.verifier:
                check_same_tokenizer(self.verifier, self._models[name])
        return self._models[name]

    @property
    def verifier(self) -> LoadedModel:
        return self.model(self.config.verifier)

    def prompts(self, slice_name: str) -> PromptSet:
        if slice_name not in self._prompts:
            ds = self.dataset
            records = apply_slice(load_records(ds.source, path=ds.path, hf_config=ds.hf_config, split=ds.split,
                                               template=ds.template), slice_name)
            window = context_window(self.verifier.model) or DEFAULT_CONTEXT
            # An HF tokenizer's decode of a flat id list returns str, as the protocol says.
            tokenizer = cast(Tokenizer, self.verifier.tokenizer)
            fit = fit_prompts(records, tokenizer, max_context=window,
                              max_new_tokens=self.generation.max_new_tokens, template=ds.template,
                              policy=ds.context_policy)
            self._prompts[slice_name] = PromptSet(slice_name, fit.prompt_ids, [r.id for r in records],
                                                  fit.n_shortened)
        return self._prompts[slice_name]

    def eos(self) -> int | None:
        """The EOS id requests stop at, or None when the suite decodes to max_new_tokens."""
        eos: int | None = self.verifier.tokenizer.eos_token_id
        return eos if self.generation.stop_at_eos else None
