"""Drafters: propose blocks of tokens for the verifier to check."""

from specperf.drafters.base import Drafter, Proposal
from specperf.drafters.model import ModelDrafter
from specperf.drafters.prompt_lookup import PromptLookupDrafter

__all__ = ["Drafter", "ModelDrafter", "PromptLookupDrafter", "Proposal"]
