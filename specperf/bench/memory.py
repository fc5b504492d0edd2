"""Out-of-memory handling: one case that runs out of device memory fails alone, with figures, and is cleaned up."""

from __future__ import annotations

import gc

import torch

from specperf.errors import SpecperfError

GIB = 1024**3


class CaseOutOfMemory(SpecperfError):
    """A case ran out of device memory; the message carries torch's message and the memory figures."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OOM error (CUDA or another accelerator)."""
    return isinstance(exc, torch.OutOfMemoryError)


def memory_figures(device: torch.device) -> str:
    """Allocated, reserved and peak memory of a CUDA device, and its free/total memory; a note elsewhere."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"no allocator figures for device {device}"
    free, total = torch.cuda.mem_get_info(device)
    return (f"allocated {torch.cuda.memory_allocated(device) / GIB:.2f} GiB, "
            f"reserved {torch.cuda.memory_reserved(device) / GIB:.2f} GiB, "
            f"peak allocated {torch.cuda.max_memory_allocated(device) / GIB:.2f} GiB, "
            f"free {free / GIB:.2f} of {total / GIB:.2f} GiB")


def release(device: torch.device) -> None:
    """Collect unreachable tensors and give the allocator's cached blocks back, so the next case starts clean."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
