"""Repository-wide pytest setup, loaded by `pytest tests/` and `pytest perf/` alike.

It sets no hub switch: `pytest perf/` honours the caller's HF_HUB_OFFLINE and HF_DATASETS_OFFLINE (offline when they
are set, downloading into HF_HOME when not), and the test suite forces offline mode in tests/conftest.py."""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
