"""How far two honest computations of a draft's logits drift apart in half precision, in rounding steps.

The audit's near-tie tolerance (``specperf.precision.NEAR_TIE_STEPS``) must cover the rounding difference between the
engine's cached one-token draft forwards and the audit's full-prefix forward. This tool measures it on the embedded
family: each draft decodes a slice speculatively (specperf's engine), then along each output the draft's logits are
computed both ways, and for every position the change of the gap between the top two logits is expressed in steps
of the dtype at the top logit's magnitude.

    python tools/near_tie_drift.py --dtype bfloat16 [--device cpu] [--prompts 16] [--json out.json]

Prints one line per draft (and writes them as JSON): positions, the largest and median drift in steps, how many
argmax decisions differ between the two computations and the largest top-two gap at which one did, and the audit's
near-tie count for the same decodes. ``tools/gpu_check.py`` runs it on CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DRAFTS = ("embedded:draft-small", "embedded:draft-medium", "embedded:draft-large")


def _logits_both_ways(draft: Any, prompt: list[int], tokens: list[int]) -> tuple[Any, Any]:
    """The draft's logits predicting tokens[1:]: a full-prefix forward, and cached one-token forwards."""
    import torch

    from specperf.engine.forward import forward, model_device, new_cache

    device = model_device(draft)
    with torch.inference_mode():
        full = draft(input_ids=torch.tensor([prompt + tokens[:-1]], device=device)).logits[0, len(prompt):]
        cache = new_cache()
        steps = [forward(draft, torch.tensor([prompt + tokens[:1]], device=device), cache, 1)[0, -1]]
        for token in tokens[1:-1]:
            steps.append(forward(draft, torch.tensor([[token]], device=device), cache, 1)[0, -1])
        return full.float(), torch.stack(steps).float()  # (n - 1, V) each


def _drift(full: Any, cached: Any, dtype: str) -> tuple[list[float], list[float]]:
    """Per position, the top-two gap's change in steps; and the full forward's top-two gap (in steps) wherever the
    two argmax decisions differ."""
    from specperf.precision import dtype_step

    drifts, flips = [], []
    top = full.topk(2, dim=-1)
    for i in range(full.shape[0]):
        first, second = int(top.indices[i, 0]), int(top.indices[i, 1])
        step = dtype_step(float(top.values[i, 0]), dtype) or 1.0
        gap_full = float(full[i, first] - full[i, second])
        gap_cached = float(cached[i, first] - cached[i, second])
        drifts.append(abs(gap_full - gap_cached) / step)
        choice = int(cached[i].argmax())
        if choice != first:
            flips.append(float(full[i, first] - full[i, choice]) / step)
    return drifts, flips


def measure(device: str, dtype: str, n_prompts: int, k: int = 4, max_new_tokens: int = 64) -> list[dict[str, Any]]:
    """One summary per embedded draft (see the module docstring)."""
    import specperf
    from specperf.bench.audit import check_counters, model_walk, walk_audit
    from specperf.bench.store import ModelStore
    from specperf.config import load_config

    suite = replace(load_config(ROOT / "perf" / "specperf.yaml"), device=device, dtype=dtype)
    store = ModelStore(suite)
    prompts, verifier = store.prompts(f"0:{n_prompts}").ids, store.verifier.model
    rows = []
    for name in DRAFTS:
        draft = store.model(name).model
        drifts: list[float] = []
        flips: list[float] = []
        near_ties = 0
        for i, prompt in enumerate(prompts):
            result = specperf.decode(verifier, prompt, drafter=specperf.ModelDrafter(draft), k=k,
                                     max_new_tokens=max_new_tokens)
            more_drifts, more_flips = _drift(*_logits_both_ways(draft, prompt, result.tokens), dtype)
            drifts, flips = drifts + more_drifts, flips + more_flips
            walk = model_walk(draft, prompt, result.tokens, k=k, max_new_tokens=max_new_tokens)
            near_ties += check_counters(f"{name}, request {i}", result, walk_audit(walk, calls=True), walk)
        rows.append({"draft": name, "device": device, "dtype": dtype, "positions": len(drifts),
                     "max_drift_steps": max(drifts), "median_drift_steps": statistics.median(drifts),
                     "argmax_differs": len(flips), "max_gap_where_differs_steps": max(flips, default=None),
                     "audit_near_ties": near_ties})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=16, help="prompts of the embedded slice (default 16)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rows = measure(args.device, args.dtype, args.prompts)
    for row in rows:
        print(" ".join(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in row.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
