"""What pytest-benchmark's machine_info lacks: library versions, CUDA, cuDNN and GPU, threads, the suite's hash.

``gpu``, ``torch``, ``cuda``, ``cudnn`` and ``transformers`` are part of the kind of machine that
:func:`specperf.output.benchfile.machine_kind` reads: runs are merged and compared only within one kind."""

from __future__ import annotations

from typing import Any

import torch

from specperf.config import SuiteConfig, config_hash


def environment_info(config: SuiteConfig) -> dict[str, Any]:
    import transformers

    import specperf

    cuda = torch.cuda.is_available()
    return {
        "specperf": specperf.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None,
        # The attention kernels of recent torch builds may come from cuDNN: another version, other fp16 rounding.
        "cudnn": torch.backends.cudnn.version() if cuda else None,  # type: ignore[no-untyped-call]
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "config_hash": config_hash(config),
        "verifier": config.verifier,
        "device": config.device,
        "dtype": config.dtype,
        "forward": config.forward,
    }
