"""Wall clock that is honest on CUDA: queued kernels are finished before the clock is read."""

from __future__ import annotations

import time

import torch


class Clock:
    """Reads ``time.perf_counter`` after synchronizing ``device`` when it is a CUDA device.

    The engine reads it at request start, at the first token and at the end, and nowhere else in the loop.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._device = device

    def now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize(self._device)
        return time.perf_counter()
