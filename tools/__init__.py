"""Maintainers' tools, each runnable as ``python tools/NAME.py`` and documented in its module docstring."""
