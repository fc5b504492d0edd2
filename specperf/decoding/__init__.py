"""Decoding engines: verifier-only baseline, speculative decoding, and transformers' assisted generation."""

from specperf.decoding.engine import decode
from specperf.decoding.hf import hf_assisted_decode
from specperf.decoding.result import DecodeResult

__all__ = ["DecodeResult", "decode", "hf_assisted_decode"]
