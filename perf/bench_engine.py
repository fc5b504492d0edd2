"""Engine benchmark: specperf's loops against transformers', and the embedded family's trade-off, in one run.

    python perf/bench_engine.py                       # embedded family, 8 eval prompts, 64 new tokens
    python perf/bench_engine.py --prompts 16 --rounds 5 --threads 2

Every method decodes the same prompts, greedily, to exactly --new-tokens tokens (no EOS stop). Rounds are
interleaved method by method, so machine drift hits every method alike; ratios are medians of per-round ratios.
Prints markdown tables; --json writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import specperf  # noqa: E402
from specperf.bench.audit import audit_model_draft  # noqa: E402
from specperf.data import apply_slice, fit_prompts, load_records  # noqa: E402
from specperf.engine.costs import step_seconds  # noqa: E402
from specperf.bench.models import load_model  # noqa: E402


def hf_generate(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def run_round(fn, prompts: list[list[int]]) -> tuple[float, list]:
    start = time.perf_counter()
    outputs = [fn(p) for p in prompts]
    return time.perf_counter() - start, outputs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verifier", default="embedded:verifier")
    ap.add_argument("--drafts", default="embedded:draft-small,embedded:draft-medium,embedded:draft-large")
    ap.add_argument("--source", default="embedded")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    verifier = load_model(args.verifier, device="cpu")
    drafts = {name: load_model(name, device="cpu") for name in args.drafts.split(",") if name}
    records = apply_slice(load_records(args.source), f"0:{args.prompts}")
    prompts = fit_prompts(records, verifier.tokenizer, max_context=verifier.model.config.n_positions,
                          max_new_tokens=args.new_tokens).prompt_ids
    n, k, v = args.new_tokens, args.k, verifier.model

    methods = {
        "baseline (specperf)": lambda p: specperf.decode(v, p, max_new_tokens=n),
        "hf generate (greedy)": lambda p: hf_generate(v, p, n),
        f"prompt-lookup k={k} (specperf)": lambda p: specperf.decode(
            v, p, drafter=specperf.PromptLookupDrafter(), k=k, max_new_tokens=n),
    }
    for name, d in drafts.items():
        drafter = specperf.ModelDrafter(d.model, label=name)
        methods[f"{name} k={k} (specperf)"] = lambda p, dr=drafter: specperf.decode(
            v, p, drafter=dr, k=k, max_new_tokens=n)
        methods[f"{name} k={k} (hf assisted)"] = lambda p, m=d.model: specperf.hf_assisted_decode(
            v, p, m, k=k, max_new_tokens=n)

    for fn in methods.values():  # warm-up: one prompt per method
        fn(prompts[0])
    times: dict[str, list[float]] = {m: [] for m in methods}
    outputs: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            elapsed, outputs[name] = run_round(fn, prompts)
            times[name].append(elapsed)

    reference = [r.tokens for r in outputs["baseline (specperf)"]]
    tokens_total = n * len(prompts)
    rows = []
    for name in methods:
        toks = [o if isinstance(o, list) else o.tokens for o in outputs[name]]
        rows.append((name, tokens_total / statistics.median(times[name]), toks == reference))

    def paired(a: str, b: str) -> float:
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))

    print(f"\n## {args.verifier} on {args.source} 0:{args.prompts}, {n} new tokens, greedy, "
          f"{args.threads} threads, {args.rounds} interleaved rounds\n")
    print("| method | tok/s (median) | speedup vs specperf baseline | exact match |")
    print("| --- | ---: | ---: | :---: |")
    for name, tps, exact in rows:
        print(f"| {name} | {tps:.1f} | {paired(name, 'baseline (specperf)'):.2f}x | {'yes' if exact else 'NO'} |")

    print("\n| comparison | ratio (median of per-round ratios) |\n| --- | ---: |")
    print(f"| specperf baseline / hf generate, tok/s | {paired('baseline (specperf)', 'hf generate (greedy)'):.2f} |")
    for name in drafts:
        ours, theirs = f"{name} k={k} (specperf)", f"{name} k={k} (hf assisted)"
        print(f"| {name}: specperf speculative / hf assisted, tok/s | {paired(ours, theirs):.2f} |")

    v1 = step_seconds(v, prompts[0], 1)
    vk = step_seconds(v, prompts[0], k + 1)
    print(f"\nverifier: 1-token step {v1 * 1e3:.2f} ms, {k + 1}-token step {vk * 1e3:.2f} ms "
          f"(v({k + 1}) = {vk / v1:.2f})\n")
    print("| draft | params | agreement (alpha) | draft acceptance | tokens / verifier call | c | "
          "expected speedup | measured speedup |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    report = {"times": times, "v1_s": v1, "vk_s": vk, "drafts": {}}
    for name, d in drafts.items():
        ours = outputs[f"{name} k={k} (specperf)"]
        audits = [audit_model_draft(d.model, p, r.tokens, k=k, max_new_tokens=n) for p, r in zip(prompts, ours)]
        alpha = sum(sum(a.matches) for a in audits) / sum(len(a.matches) for a in audits)
        acc = sum(r.accepted for r in ours) / sum(r.proposed for r in ours)
        tpc = sum(r.new_tokens for r in ours) / sum(r.verifier_calls for r in ours)
        c = step_seconds(d.model, prompts[0], 1) / v1
        expected = (1 - alpha ** (k + 1)) / (1 - alpha) / (k * c + vk / v1) if alpha < 1 else (k + 1) / (k * c + vk / v1)
        measured = paired(f"{name} k={k} (specperf)", "baseline (specperf)")
        assert [a.accepted for a in audits] == [r.accepted for r in ours], "audit disagrees with engine counters"
        print(f"| {name} | {d.n_params / 1e6:.2f}M | {alpha:.3f} | {acc:.3f} | {tpc:.2f} | {c:.3f} | "
              f"{expected:.2f}x | {measured:.2f}x |")
        report["drafts"][name] = {"alpha": alpha, "acceptance": acc, "tokens_per_call": tpc, "c": c,
                                  "expected": expected, "measured": measured}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
