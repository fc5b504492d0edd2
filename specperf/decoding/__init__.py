"""Decoding engines: verifier-only baseline, speculative decoding (batch 1 and batched), transformers' assisted
generation."""

from specperf.decoding.batch import decode_batch
from specperf.decoding.engine import decode
from specperf.decoding.hf import hf_assisted_decode
from specperf.decoding.result import DecodeResult

__all__ = ["DecodeResult", "decode", "decode_batch", "hf_assisted_decode"]
