"""Host syncs per speculative step: how often the engine makes the host wait for the GPU while it decodes.

A measurement, not a test: the embedded family (verifier + draft-small, greedy, k = 4) decodes one prompt with
``decode`` (batch 1) and eight with ``decode_batch`` (batch 8) under ``torch.cuda.set_sync_debug_mode("warn")``,
which warns at each sync that goes through torch's stream-sync and blocking-copy paths (``.item()``,
``.tolist()``, ``.cpu()``, ``nonzero``, a blocking copy from host to device). ``torch.cuda.synchronize()`` is not
among them, so the engine's clock (three per request, specperf/engine/timing.py) is not counted. The warnings of
one counted decode (after an uncounted warm-up) are divided by its speculative steps, ``verifier_calls - 1`` (the
prefill is the first call; in a batch, the steps of its longest-running row). On a CPU nothing synchronizes: the
decodes run, the steps are reported and the counts are None.

Usage::

    python tools/sync_count.py --device cuda                 # float16; JSON on stdout
    python tools/sync_count.py --device cuda --out sync.json --batch 1,8 --k 4 --max-new-tokens 32
    python tools/sync_count.py --device cpu                  # the same decodes, no counts

tools/gpu_check.py runs it as its ``sync-count`` check.
"""

from __future__ import annotations

import argparse
import collections
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from specperf import ModelDrafter, decode, decode_batch
from specperf.bench.store import ModelStore
from specperf.config import parse_config
from specperf.records import DecodeResult

ROOT = Path(__file__).resolve().parents[1]
DRAFT = "embedded:draft-small"
SYNC_WARNING = "synchronizing CUDA operation"  # torch's text for a sync under set_sync_debug_mode("warn")
TOP_SITES = 8  # call sites listed per run, most frequent first


def count_syncs(run: Callable[[], list[DecodeResult]], counting: bool) -> tuple[list[DecodeResult], list[str]]:
    """Run ``run`` once; with ``counting``, under sync debug mode "warn". Returns its results and one
    ``file:line`` per synchronizing call (the Python frame that made it)."""
    if not counting:
        return run(), []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every occurrence, not once per call site
        torch.cuda.set_sync_debug_mode("warn")
        try:
            results = run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = [f"{_short(w.filename)}:{w.lineno}" for w in caught if SYNC_WARNING in str(w.message)]
    return results, sites


def _short(filename: str) -> str:
    """A path relative to the repository where it is inside it."""
    path = Path(filename)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else filename


def measure(store: ModelStore, batch: int, k: int, max_new_tokens: int) -> dict[str, Any]:
    """One warm-up and one counted speculative decode of ``batch`` prompts; syncs per speculative step."""
    verifier, draft = store.verifier.model, store.model(DRAFT).model
    prompts = store.prompts(f"0:{batch}").ids
    if batch == 1:
        def run() -> list[DecodeResult]:
            return [decode(verifier, prompts[0], drafter=ModelDrafter(draft), k=k, max_new_tokens=max_new_tokens)]
    else:
        def run() -> list[DecodeResult]:
            return decode_batch(verifier, prompts, drafter=ModelDrafter(draft), k=k, max_new_tokens=max_new_tokens)
    counting = store.device.type == "cuda"
    run()  # warm-up: kernels, allocator and library handles are set up outside the count
    if counting:
        torch.cuda.synchronize(store.device)
    results, sites = count_syncs(run, counting)
    steps = max(r.verifier_calls for r in results) - 1  # (B,) rows start together; the batch steps until the last
    syncs = len(sites) if counting else None
    return {"batch": batch, "steps": steps, "new_tokens": sum(len(r.tokens) for r in results),
            "syncs": syncs, "syncs_per_step": syncs / steps if syncs is not None and steps else None,
            "sites": dict(collections.Counter(sites).most_common(TOP_SITES)) if counting else None}


def suite(device: str, dtype: str, max_batch: int) -> dict[str, Any]:
    return {"verifier": "embedded:verifier", "device": device, "dtype": dtype,
            "threads": 1 if device == "cpu" else None,
            "drafts": [{"name": "draft-small", "model": DRAFT}],
            "dataset": {"source": "embedded", "slices": [f"0:{max_batch}"]}}


def parse_batches(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes such as 1,8, got {value!r}") from None
    if not sizes or any(not 1 <= b <= 64 for b in sizes):
        raise argparse.ArgumentTypeError(f"each batch size must be in 1..64, got {value!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", metavar="DEVICE", help="cpu, cuda or cuda:N (default: cuda)")
    parser.add_argument("--dtype", default=None, metavar="DTYPE",
                        help="float32, float16 or bfloat16 (default: float16 on CUDA, float32 on a CPU)")
    parser.add_argument("--batch", type=parse_batches, default=(1, 8), metavar="SIZES",
                        help="comma-separated batch sizes (default: 1,8)")
    parser.add_argument("--k", type=int, default=4, metavar="K", help="draft block size (default: 4)")
    parser.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                        help="new tokens per request (default: 32)")
    parser.add_argument("--out", type=Path, default=None, metavar="PATH", help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    dtype = args.dtype or ("float32" if args.device == "cpu" else "float16")
    store = ModelStore(parse_config(suite(args.device, dtype, max(args.batch))))
    report = {"device": str(store.device), "dtype": dtype, "draft": DRAFT, "k": args.k,
              "max_new_tokens": args.max_new_tokens, "counted": store.device.type == "cuda",
              "runs": [measure(store, b, args.k, args.max_new_tokens) for b in args.batch]}
    text = json.dumps(report, indent=2)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
