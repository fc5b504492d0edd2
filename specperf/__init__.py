"""specperf: measure LLM speculative decoding, and fail CI when it regresses."""

from specperf.decoding import DecodeResult, decode, decode_batch, hf_assisted_decode
from specperf.drafters import Drafter, ModelDrafter, PromptLookupDrafter
from specperf.errors import ConfigError, ContextLengthError, DataError, ModelError, SpecperfError

__all__ = [
    "ConfigError",
    "ContextLengthError",
    "DataError",
    "DecodeResult",
    "Drafter",
    "ModelDrafter",
    "ModelError",
    "PromptLookupDrafter",
    "SpecperfError",
    "decode",
    "decode_batch",
    "hf_assisted_decode",
]
__version__ = "0.1.0"
