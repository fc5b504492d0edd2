"""The packed forward against the lean forward, end to end: tokens/s of the same decodes, side by side.

A measurement, not a test: the embedded verifier and draft-medium (float32, one CPU thread, greedy, the embedded
eval prompts) decode with ``decode`` at batch 1 and ``decode_batch`` above it, verifier-only and speculative at
each k, once with ``forward: lean`` and once with ``forward: packed``. Rounds alternate between the two forwards, so
both see the same drift of a shared machine; each cell is the median over rounds of aggregate tokens/s (all new
tokens of the batch over the round's wall). Every packed decode must emit the lean decode's tokens.

Usage::

    python tools/packed_forward.py                       # batch 1,4,8, k 2,4, 5 rounds; markdown on stdout
    python tools/packed_forward.py --batch 1,8 --k 4 --rounds 3 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from specperf import ModelDrafter, decode, decode_batch
from specperf.bench.store import ModelStore
from specperf.config import parse_config
from specperf.engine.forward import ModelForward
from specperf.records import DecodeResult

FORWARDS = ("lean", "packed")
Run = Callable[[], list[DecodeResult]]


def runs(store: ModelStore, path: str, batch: int, k: int, new: int) -> Run:
    """One decode of the first ``batch`` prompts through forward ``path``; verifier-only where k is 0."""
    verifier = ModelForward(store.verifier.model, path)
    drafter = ModelDrafter(ModelForward(store.model("embedded:draft-medium").model, path)) if k else None
    prompts = store.prompts(f"0:{batch}").ids
    if batch == 1:
        return lambda: [decode(verifier, prompts[0], drafter=drafter, k=k or 4, max_new_tokens=new)]
    return lambda: decode_batch(verifier, prompts, drafter=drafter, k=k or 4, max_new_tokens=new)


def timed(run: Run) -> tuple[float, list[list[int]]]:
    """Aggregate tokens/s of one call of ``run``, and its tokens."""
    start = time.perf_counter()
    results = run()
    wall = time.perf_counter() - start
    return sum(len(r.tokens) for r in results) / wall, [r.tokens for r in results]


def compare(store: ModelStore, batch: int, k: int, new: int, rounds: int) -> dict[str, float]:
    """Median tokens/s of each forward over ``rounds`` alternating rounds, after one warm-up each."""
    chosen = {path: runs(store, path, batch, k, new) for path in FORWARDS}
    for run in chosen.values():
        run()
    rates: dict[str, list[float]] = {path: [] for path in FORWARDS}
    for _ in range(rounds):
        outputs = {}
        for path, run in chosen.items():
            rate, outputs[path] = timed(run)
            rates[path].append(rate)
        if outputs["packed"] != outputs["lean"]:
            raise AssertionError(f"batch {batch}, k {k}: the packed forward emitted other tokens than the lean one")
    return {path: statistics.median(values) for path, values in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,4,8", help="comma-separated batch sizes")
    ap.add_argument("--k", default="2,4", help="comma-separated block sizes (the baseline runs too)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batches, ks = [int(b) for b in args.batch.split(",")], [0] + [int(k) for k in args.k.split(",")]
    store = ModelStore(parse_config({
        "verifier": "embedded:verifier", "device": "cpu", "dtype": "float32", "threads": 1,
        "drafts": [{"name": "draft-medium", "model": "embedded:draft-medium"}],
        "dataset": {"source": "embedded", "slices": [f"0:{max(batches)}"]}}))
    torch.set_num_threads(1)
    print("| batch | decoding | lean (tok/s) | packed (tok/s) | packed / lean |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for batch in batches:
        for k in ks:
            rate = compare(store, batch, k, args.max_new_tokens, args.rounds)
            label = f"draft-medium k={k}" if k else "verifier-only"
            print(f"| {batch} | {label} | {rate['lean']:.0f} | {rate['packed']:.0f} | "
                  f"{rate['packed'] / rate['lean']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
