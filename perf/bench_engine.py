"""Engine benchmark: specperf's loops against transformers', and the embedded family's trade-off, in one run.

    python perf/bench_engine.py                       # embedded family, 8 eval prompts, 64 new tokens
    python perf/bench_engine.py --prompts 16 --rounds 5 --threads 2

Every method decodes the same prompts, greedily, to exactly --new-tokens tokens (no EOS stop). Rounds are
interleaved method by method, so machine drift hits every method alike; ratios are medians of per-round ratios.
specperf's methods run twice: with its lean GPT-2 forward (the default) and with transformers' forward, so the
tables separate what the loop gains from what the forward gains.
Prints markdown tables; --json writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import specperf  # noqa: E402
from specperf.analysis.stats import expected_speedup  # noqa: E402
from specperf.bench.audit import audit_model_draft  # noqa: E402
from specperf.bench.models import LoadedModel, load_model  # noqa: E402
from specperf.data import apply_slice, fit_prompts, load_records  # noqa: E402
from specperf.engine.costs import step_seconds  # noqa: E402
from specperf.engine.forward import ModelForward  # noqa: E402


def hf_generate(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def run_round(fn, prompts: list[list[int]]) -> tuple[float, list]:
    start = time.perf_counter()
    outputs = [fn(p) for p in prompts]
    return time.perf_counter() - start, outputs


Method = Callable[[list[int]], Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--verifier", default="embedded:verifier")
    ap.add_argument("--drafts", default="embedded:draft-small,embedded:draft-medium,embedded:draft-large")
    ap.add_argument("--source", default="embedded")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", type=Path)
    return ap.parse_args(argv)


TF = "specperf loop, transformers forward"


def build_methods(v: torch.nn.Module, drafts: dict[str, LoadedModel], k: int, n: int) -> dict[str, Method]:
    """Every method decodes one prompt to exactly n tokens; the specperf baseline comes first."""
    lean_v, plain_v = ModelForward(v), ModelForward(v, "transformers")
    methods: dict[str, Method] = {
        "baseline (specperf)": lambda p: specperf.decode(lean_v, p, max_new_tokens=n),
        "hf generate (greedy)": lambda p: hf_generate(v, p, n),
        f"prompt-lookup k={k} (specperf)": lambda p: specperf.decode(
            lean_v, p, drafter=specperf.PromptLookupDrafter(), k=k, max_new_tokens=n),
    }
    for name, d in drafts.items():
        drafter = specperf.ModelDrafter(d.forward, label=name)
        plain = specperf.ModelDrafter(ModelForward(d.model, "transformers"), label=name)
        methods[f"{name} k={k} (specperf)"] = lambda p, dr=drafter: specperf.decode(
            lean_v, p, drafter=dr, k=k, max_new_tokens=n)
        methods[f"{name} k={k} (hf assisted)"] = lambda p, m=d.model: specperf.hf_assisted_decode(
            v, p, m, k=k, max_new_tokens=n)
        methods[f"{name} k={k} ({TF})"] = lambda p, dr=plain: specperf.decode(
            plain_v, p, drafter=dr, k=k, max_new_tokens=n)
    methods[f"baseline ({TF})"] = lambda p: specperf.decode(plain_v, p, max_new_tokens=n)
    return methods


def time_methods(methods: dict[str, Method], prompts: list[list[int]],
                 rounds: int) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Seconds per round of each method, rounds interleaved method by method; and each method's last outputs."""
    for fn in methods.values():  # warm-up: one prompt per method
        fn(prompts[0])
    times: dict[str, list[float]] = {m: [] for m in methods}
    outputs: dict[str, list[Any]] = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            elapsed, outputs[name] = run_round(fn, prompts)
            times[name].append(elapsed)
    return times, outputs


def paired(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of time(b) / time(a): how much faster a ran than b, round by round."""
    return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))


def print_methods(times: dict[str, list[float]], outputs: dict[str, list[Any]], drafts: list[str], k: int,
                  tokens_total: int) -> None:
    reference = [r.tokens for r in outputs["baseline (specperf)"]]
    print("| method | tok/s (median) | speedup vs specperf baseline | exact match |")
    print("| --- | ---: | ---: | :---: |")
    for name in times:
        tokens = [o if isinstance(o, list) else o.tokens for o in outputs[name]]
        rate = tokens_total / statistics.median(times[name])
        print(f"| {name} | {rate:.1f} | {paired(times, name, 'baseline (specperf)'):.2f}x | "
              f"{'yes' if tokens == reference else 'NO'} |")
    print("\n| comparison | ratio (median of per-round ratios) |\n| --- | ---: |")
    print(f"| specperf baseline / hf generate, tok/s | "
          f"{paired(times, 'baseline (specperf)', 'hf generate (greedy)'):.2f} |")
    print(f"| baseline ({TF}) / hf generate, tok/s | "
          f"{paired(times, f'baseline ({TF})', 'hf generate (greedy)'):.2f} |")
    for name in drafts:
        ours, theirs = f"{name} k={k} (specperf)", f"{name} k={k} (hf assisted)"
        print(f"| {name}: specperf speculative / hf assisted, tok/s | {paired(times, ours, theirs):.2f} |")
        print(f"| {name}: speculative ({TF}) / hf assisted, tok/s | "
              f"{paired(times, f'{name} k={k} ({TF})', theirs):.2f} |")


def family_row(name: str, d: LoadedModel, ours: list[Any], prompts: list[list[int]], k: int, n: int,
               v1: float, vk: float, measured: float) -> dict[str, float]:
    """Agreement, acceptance, tokens per call, c and Leviathan's expected speedup of one draft, from its run."""
    audits = [audit_model_draft(d.model, p, r.tokens, k=k, max_new_tokens=n) for p, r in zip(prompts, ours)]
    assert [a.accepted for a in audits] == [r.accepted for r in ours], "audit disagrees with engine counters"
    alpha = sum(sum(a.matches) for a in audits) / sum(len(a.matches) for a in audits)
    c = step_seconds(d.model, prompts[0], 1) / v1
    return {"alpha": alpha, "acceptance": sum(r.accepted for r in ours) / sum(r.proposed for r in ours),
            "tokens_per_call": sum(r.new_tokens for r in ours) / sum(r.verifier_calls for r in ours), "c": c,
            "expected": expected_speedup(alpha, k, c, vk / v1), "measured": measured}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    verifier = load_model(args.verifier, device="cpu")
    drafts = {name: load_model(name, device="cpu") for name in args.drafts.split(",") if name}
    records = apply_slice(load_records(args.source), f"0:{args.prompts}")
    prompts = fit_prompts(records, verifier.tokenizer, max_context=verifier.model.config.n_positions,
                          max_new_tokens=args.new_tokens).prompt_ids
    n, k, v = args.new_tokens, args.k, verifier.model
    times, outputs = time_methods(build_methods(v, drafts, k, n), prompts, args.rounds)

    print(f"\n## {args.verifier} on {args.source} 0:{args.prompts}, {n} new tokens, greedy, "
          f"{args.threads} threads, {args.rounds} interleaved rounds\n")
    print_methods(times, outputs, list(drafts), k, n * len(prompts))
    v1, vk = step_seconds(v, prompts[0], 1), step_seconds(v, prompts[0], k + 1)
    print(f"\nverifier: 1-token step {v1 * 1e3:.2f} ms, {k + 1}-token step {vk * 1e3:.2f} ms "
          f"(v({k + 1}) = {vk / v1:.2f})\n")
    print("| draft | params | agreement (alpha) | draft acceptance | tokens / verifier call | c | "
          "expected speedup | measured speedup |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    report: dict[str, Any] = {"times": times, "v1_s": v1, "vk_s": vk, "drafts": {}}
    for name, d in drafts.items():
        measured = paired(times, f"{name} k={k} (specperf)", "baseline (specperf)")
        row = family_row(name, d, outputs[f"{name} k={k} (specperf)"], prompts, k, n, v1, vk, measured)
        print(f"| {name} | {d.n_params / 1e6:.2f}M | {row['alpha']:.3f} | {row['acceptance']:.3f} | "
              f"{row['tokens_per_call']:.2f} | {row['c']:.3f} | {row['expected']:.2f}x | {measured:.2f}x |")
        report["drafts"][name] = row
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
