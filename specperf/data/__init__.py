"""Prompt data: records and templates, sources, slices, context fitting, and the synthetic embedded set."""

from specperf.data.fit import POLICIES, FitResult, fit_prompts
from specperf.data.prompt import DEFAULT_TEMPLATE, Record, render_prompt
from specperf.data.slices import SliceSpec, apply_slice, parse_slice
from specperf.data.sources import HF_CONFIGS, SOURCES, load_records

__all__ = ["DEFAULT_TEMPLATE", "HF_CONFIGS", "POLICIES", "SOURCES", "FitResult", "Record", "SliceSpec", "apply_slice",
           "fit_prompts", "load_records", "parse_slice", "render_prompt"]
