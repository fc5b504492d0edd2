"""The ``vllm:`` mapping (suite level and per draft): validated engine arguments for ``vllm.LLM(...)``.

Torch-free and vLLM-free: the keys are checked here at configure time; whether vLLM itself accepts the values (a
speculative method it lacks, a parallel size larger than the machine) is checked when its engine is created.
"""

from __future__ import annotations

from specperf.config.checks import At, check_bool, check_choice, check_float, check_int, check_mapping, show_value
from specperf.config.schema import (
    MAX_BATCH_SIZE,
    MAX_PARALLEL,
    VLLM_EXECUTOR_BACKENDS,
    VLLM_KEYS,
    VLLM_RESERVED_SPEC_KEYS,
    VllmSpec,
)

MAX_MODEL_LEN = 1 << 24


def _spec_extras(value: object, at: At) -> tuple[tuple[str, str | int | float | bool | None], ...]:
    """speculative_config extras: scalar values by key, sorted; num_speculative_tokens is the suite's k."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise at.error(value, "a mapping of vLLM speculative_config keys", "write e.g. {method: eagle3, "
                       "model: yuhuili/EAGLE3-LLaMA3.1-Instruct-8B}")
    extras: list[tuple[str, str | int | float | bool | None]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise at.error(key, "string keys", "quote the key")
        if key in VLLM_RESERVED_SPEC_KEYS:
            raise at.key(key).error(item, "no num_speculative_tokens (the suite's k sets it for each case)",
                                    "remove it and list the block sizes in k")
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise at.key(key).error(item, "a string, number, boolean or null",
                                    f"write {key} as a plain value ({show_value(item)} is not one)")
        extras.append((key, item))
    return tuple(sorted(extras))


def parse_vllm(value: object, at: At) -> VllmSpec:
    """A ``vllm:`` mapping; every key optional, unknown keys refused with the closest valid one."""
    data = check_mapping(value, at, VLLM_KEYS)
    tp, pp = data.get("tensor_parallel_size"), data.get("pipeline_parallel_size")
    backend, memory = data.get("distributed_executor_backend"), data.get("gpu_memory_utilization")
    seqs, length, eager = data.get("max_num_seqs"), data.get("max_model_len"), data.get("enforce_eager")
    return VllmSpec(
        tensor_parallel_size=None if tp is None else check_int(tp, at.key("tensor_parallel_size"), 1, MAX_PARALLEL),
        pipeline_parallel_size=None if pp is None else check_int(pp, at.key("pipeline_parallel_size"), 1, MAX_PARALLEL),
        distributed_executor_backend=None if backend is None else check_choice(
            backend, at.key("distributed_executor_backend"), VLLM_EXECUTOR_BACKENDS),
        gpu_memory_utilization=None if memory is None else check_float(
            memory, at.key("gpu_memory_utilization"), 0.0, 1.0, open_bounds=True),
        max_num_seqs=None if seqs is None else check_int(seqs, at.key("max_num_seqs"), 1, MAX_BATCH_SIZE),
        max_model_len=None if length is None else check_int(length, at.key("max_model_len"), 16, MAX_MODEL_LEN),
        enforce_eager=None if eager is None else check_bool(eager, at.key("enforce_eager")),
        enable_prefix_caching=None if data.get("enable_prefix_caching") is None else check_bool(
            data["enable_prefix_caching"], at.key("enable_prefix_caching")),
        speculative_config=_spec_extras(data.get("speculative_config"), at.key("speculative_config")),
    )
