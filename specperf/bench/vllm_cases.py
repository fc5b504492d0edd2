"""The cases of ``engine: vllm`` drafts: which vLLM engine each needs, and the functions that decode through it.

A case's speedup is against vLLM's own verifier-only decoding of the same prompts, with the same engine arguments
and no speculative config; its exactness is against specperf's verifier-only tokens, like every other engine's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from specperf.bench.interventions import GroupFn
from specperf.bench.models import model_location
from specperf.config import SuiteConfig
from specperf.config.cases import Case
from specperf.config.schema import EMBEDDED_PREFIX
from specperf.embedded import TOKENIZER_DIR, WEIGHTS_DIR
from specperf.engine.vllm_engine import (
    EngineKey,
    VllmEngineError,
    VllmEngines,
    audited_method,
    engine_args,
    speculative_config,
    vllm_generate,
    vllm_methods,
)
from specperf.records import DecodeResult


class StagedModels:
    """vLLM reads a model's tokenizer from the model's own folder; the embedded family keeps one tokenizer beside
    its models. Each embedded model is staged once per session as a folder of links to its files and the
    tokenizer's. Hub ids and local paths pass through unchanged."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def location(self, name: str) -> str:
        if not name.startswith(EMBEDDED_PREFIX):
            return model_location(name)
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="specperf-vllm-")
        member = name[len(EMBEDDED_PREFIX):]
        staged = Path(self._dir.name) / member
        if not staged.exists():
            staged.mkdir()
            for source in [*Path(model_location(name)).iterdir(), *(WEIGHTS_DIR / TOKENIZER_DIR).iterdir()]:
                (staged / source.name).symlink_to(source)
        return str(staged)

    def cleanup(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class VllmCases:
    """Engine keys and decode functions of vLLM cases; owns the session's engines and staged model folders.

    ``config``: the suite (its vllm mappings, dtype, verifier, generation settings); ``device``: the suite's resolved
    device.
    """

    def __init__(self, config: SuiteConfig, device: torch.device) -> None:
        self.config, self.generation, self.device = config, config.generation, device
        self.engines = VllmEngines(device=str(device), threads=config.threads)
        self.staged = StagedModels()

    def speculative(self, case: Case) -> dict[str, object]:
        """The case's speculative_config, checked against the methods this vLLM has."""
        assert case.draft is not None
        spec = self.config.vllm_for(case.draft)
        model = case.draft.model
        config = speculative_config(case.draft, spec, case.k, self.staged.location(model) if model else None)
        known = vllm_methods()
        if config["method"] not in known:
            raise VllmEngineError(f"{case.id}: this vLLM has no speculative method {config['method']!r}; it has "
                                  f"{', '.join(known)}. Fix: set vllm.speculative_config.method to one of them")
        return config

    def audited(self, case: Case) -> bool:
        """Whether transformers can replay this case's drafter (draft models and n-gram lookup)."""
        return audited_method(self.speculative(case))

    def key(self, case: Case, *, speculative: bool) -> EngineKey:
        assert case.draft is not None
        config = self.config
        args = engine_args(config.vllm_for(case.draft), device=str(self.device), dtype=config.dtype,
                           seed=self.generation.seed, max_batch=max(config.batch_size),
                           verifier_dir=self.staged.location(config.verifier),
                           trust_remote_code=config.trust_remote_code, memory_default=self.engines.memory_default)
        extras = tuple(sorted(self.speculative(case).items())) if speculative else None
        return EngineKey(args, extras)

    def group_fn(self, case: Case, *, speculative: bool) -> GroupFn:
        """Decode a group of requests through the case's engine (speculative, or its verifier-only twin); the
        engine starts here, before any timed round."""
        label = case.id if speculative else f"{case.id} (verifier-only baseline)"
        llm = self.engines.get(self.key(case, speculative=speculative), label)
        gen, k = self.generation, case.k if speculative else 0

        def group(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
            return vllm_generate(llm, prompts, k=k, max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
                                 seed=gen.seed + i, stop_at_eos=gen.stop_at_eos)
        return group

    def close(self) -> None:
        """Shut every engine down and remove the staged folders."""
        self.engines.close()
        self.staged.cleanup()
