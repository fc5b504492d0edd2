"""Named exceptions. Every error a user can cause derives from SpecperfError and says what to fix."""

from __future__ import annotations


class SpecperfError(Exception):
    """Base class for errors caused by bad input or an unusable environment."""


class ConfigError(SpecperfError):
    """The suite configuration or a command-line option is invalid."""


class DataError(SpecperfError):
    """A prompt source is missing, malformed, empty or cannot be sliced."""


class ModelError(SpecperfError):
    """A model cannot be loaded, or drafter and verifier do not fit together."""


class ContextLengthError(SpecperfError):
    """A prompt plus its new tokens does not fit the verifier's context window."""
