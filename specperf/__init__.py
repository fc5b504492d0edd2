"""specperf: measure LLM speculative decoding, and fail CI when it regresses.

The public API is imported lazily (PEP 562): ``import specperf`` loads neither torch nor transformers, and
``specperf.decode`` loads the engine on first use. The pytest plugin relies on this to cost nothing in a pytest run
that does not use it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from specperf.errors import ConfigError, ContextLengthError, DataError, ModelError, SpecperfError

if TYPE_CHECKING:
    from specperf.data.sources import load_records
    from specperf.engine.batch import decode_batch
    from specperf.engine.decode import decode
    from specperf.engine.drafters.base import Drafter
    from specperf.engine.drafters.model import ModelDrafter
    from specperf.engine.drafters.prompt_lookup import PromptLookupDrafter
    from specperf.engine.hf import hf_assisted_decode
    from specperf.records import DecodeResult

__version__ = "0.1.0"

# Public name -> the module that defines it; imported on first attribute access.
_LAZY = {
    "DecodeResult": "specperf.records",
    "Drafter": "specperf.engine.drafters.base",
    "ModelDrafter": "specperf.engine.drafters.model",
    "PromptLookupDrafter": "specperf.engine.drafters.prompt_lookup",
    "decode": "specperf.engine.decode",
    "decode_batch": "specperf.engine.batch",
    "hf_assisted_decode": "specperf.engine.hf",
    "load_records": "specperf.data.sources",
}

__all__ = [
    "ConfigError", "ContextLengthError", "DataError", "DecodeResult", "Drafter", "ModelDrafter", "ModelError",
    "PromptLookupDrafter", "SpecperfError", "decode", "decode_batch", "hf_assisted_decode", "load_records",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'specperf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
