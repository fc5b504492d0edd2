"""A test-only pytest plugin for tools/gpu_check.py's ``oom`` check: the k = 2 draft case runs out of memory.

Load it with ``-p tools.gpu_check_oom`` from the repository root; specperf never imports it. Through
``pytest_specperf_interventions`` (the seam tests/plugins/inject_faults.py uses too) it wraps the decoding of every
draft case with k = 2 so that, inside the case's timed pass, it first allocates twice the device's memory: on CUDA a
real ``torch.OutOfMemoryError`` from the caching allocator, which specperf must turn into a ``CaseOutOfMemory``
failure of that case alone while the next case runs and passes. On a CPU the same request for 1 PiB fails in the CPU
allocator with a plain RuntimeError, not an OutOfMemoryError: what specperf makes of that is what the check reports.
A run with this plugin says so in every case's ``injected_faults`` (``forced_oom=k2``).
"""

from __future__ import annotations

import pytest
import torch

from specperf.bench.interventions import GroupFn, Interventions
from specperf.config.cases import Case
from specperf.records import DecodeResult

OOM_K = 2  # the block size of the case that runs out of memory
CPU_BYTES = 1 << 50  # 1 PiB: more than any CPU allocator can reserve (beyond a 47-bit address space)


def too_many_bytes(device: torch.device) -> int:
    """Twice the memory of a CUDA device; 1 PiB elsewhere."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).total_memory
    return CPU_BYTES


class ForcedOutOfMemory(Interventions):
    """Allocates more than ``device`` holds at the start of each decode of the k = OOM_K draft cases."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def wrap_decode(self, case: Case, fn: GroupFn) -> GroupFn:
        if case.draft is None or case.k != OOM_K:
            return fn

        def out_of_memory(i: int, prompts: list[list[int]]) -> list[DecodeResult]:
            torch.empty(too_many_bytes(self.device), dtype=torch.uint8, device=self.device)
            return fn(i, prompts)  # reached only where the allocation succeeds, and then the check fails

        return out_of_memory

    def describe(self) -> str | None:
        return f"forced_oom=k{OOM_K}"


def plugin_device(config: pytest.Config) -> torch.device:
    """The device the suite runs on, from --specperf-device (gpu_check passes it): auto resolves as specperf does."""
    device = config.getoption("specperf_device") or "cpu"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@pytest.hookimpl
def pytest_specperf_interventions(config: pytest.Config) -> ForcedOutOfMemory:
    return ForcedOutOfMemory(plugin_device(config))
