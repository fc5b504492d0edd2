"""Host data to the device without making the host wait: the engine's one way of sending Python values to a model.

On CUDA a copy from ordinary (pageable) host memory blocks until the copy is done, so every ``torch.tensor(list)
.to(cuda)`` in a decoding loop is a host sync. :func:`to_device` builds the tensor in pinned memory and copies it
asynchronously; the host goes on while the copy is queued before the kernels that read it. On a CPU it is the
tensor itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def to_device(values: Sequence[Any], device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``values`` (nested lists of numbers) as a tensor on ``device``; asynchronous from pinned memory on CUDA."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host if device.type == "cpu" else host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
