"""Drafters: propose blocks of tokens for the verifier to check."""

from specperf.engine.drafters.base import Drafter, Proposal
from specperf.engine.drafters.model import ModelDrafter
from specperf.engine.drafters.prompt_lookup import PromptLookupDrafter

__all__ = ["Drafter", "ModelDrafter", "PromptLookupDrafter", "Proposal"]
