"""What each key of the output contract means: one (unit, meaning) per key of
:class:`specperf.analysis.contract.DraftInfo`, rendered into the docs' contract page by :func:`contract_table`.

tests/test_contract.py checks that these keys, the TypedDicts and a real run's JSON agree key for key.
"""

from __future__ import annotations

FIELDS: dict[str, tuple[str, str]] = {
    "case_id": ("", "stable id, e.g. `draft-small-k4-0:8`"),
    "verifier": ("", "the verifier's model id (hub id, path or `embedded:NAME`)"),
    "draft": ("", "the draft's name in the suite; null for a baseline"),
    "draft_model": ("", "the draft's model id; null for prompt lookup"),
    "drafter": ("", "`model` or `prompt-lookup`"),
    "engine": ("", "`specperf`, `hf` (transformers' assisted generation) or `vllm`"),
    "k": ("tokens", "block size: draft tokens proposed per verifier call at most; 0 for a baseline"),
    "slice": ("", "the dataset slice, e.g. `0:8`"),
    "batch_size": ("requests", "requests decoded together"),
    "device": ("", "the device the models ran on, e.g. `cpu`, `cuda:0`"),
    "dtype": ("", "`float32`, `float16` or `bfloat16`"),
    "n_requests": ("count", "requests per pass (the slice's prompts)"),
    "new_tokens": ("count", "new tokens per pass, all requests"),
    "n_shortened": ("count", "prompts whose abstract was shortened to fit the context window"),
    "latency_p50": (
        "s/token",
        "per request: wall / new tokens, pooled over rounds (in a batch, its wall runs from batch start to "
        "its last token)"),
    "latency_p95": (
        "s/token",
        "per request: wall / new tokens, pooled over rounds (in a batch, its wall runs from batch start to "
        "its last token)"),
    "throughput_p50": ("tok/s", "per request: new tokens / wall (p5 is the slow tail)"),
    "throughput_p95": ("tok/s", "per request: new tokens / wall (p5 is the slow tail)"),
    "throughput_p5": ("tok/s", "per request: new tokens / wall (p5 is the slow tail)"),
    "ttft_p50": ("s", "time to first token; (wall - TTFT) / (new tokens - 1)"),
    "tpot_p50": ("s", "time to first token; (wall - TTFT) / (new tokens - 1)"),
    "throughput_aggregate": (
        "tok/s",
        "all new tokens of a round / the round's wall, median over rounds (the batch's throughput)"),
    "round_s": ("s", "decode time of each timed round (the sum of its batches' walls)"),
    "time_verifier_per_token": (
        "s/token",
        "where the wall time goes, from one untimed instrumented pass after the timed rounds: inside verifier"
        " forwards, inside draft forwards (or prompt lookup's `propose`), and everything else (the loop's "
        "host work); null for vLLM cases and under `--benchmark-disable`"),
    "time_draft_per_token": (
        "s/token",
        "where the wall time goes, from one untimed instrumented pass after the timed rounds: inside verifier"
        " forwards, inside draft forwards (or prompt lookup's `propose`), and everything else (the loop's "
        "host work); null for vLLM cases and under `--benchmark-disable`"),
    "time_other_per_token": (
        "s/token",
        "where the wall time goes, from one untimed instrumented pass after the timed rounds: inside verifier"
        " forwards, inside draft forwards (or prompt lookup's `propose`), and everything else (the loop's "
        "host work); null for vLLM cases and under `--benchmark-disable`"),
    "time_verifier_share": ("0..1", "the same as shares of that pass's wall"),
    "time_draft_share": ("0..1", "the same as shares of that pass's wall"),
    "time_other_share": ("0..1", "the same as shares of that pass's wall"),
    "speedup": ("x", "paired baseline's median latency / this case's median latency"),
    "speedup_aggregate": (
        "x",
        "total paired baseline time / total case time (= aggregate throughput ratio at the same batch size)"),
    "speedup_rounds": ("x", "per-round speedups (the timing gate's samples)"),
    "baseline_latency_p50": ("s/token", "the paired baseline's median latency"),
    "acceptance_mean": ("0..1", "draft acceptance (vLLM: accepted / proposed) per request"),
    "acceptance_p50": ("0..1", "draft acceptance (vLLM: accepted / proposed) per request"),
    "acceptance_p95": ("0..1", "draft acceptance (vLLM: accepted / proposed) per request"),
    "acceptance_samples": (
        "count",
        "requests behind the per-request statistics (`acceptance_mean/p50/p95`, `agreement_*`, `alpha`): the "
        "acceptance slice's when greedy, else the timed requests'"),
    "agreement_samples": (
        "count",
        "requests behind the per-request statistics (`acceptance_mean/p50/p95`, `agreement_*`, `alpha`): the "
        "acceptance slice's when greedy, else the timed requests'"),
    "acceptance_sample_slice": ("", "the slice those statistics are over (`dataset.acceptance_slice`, or the case's)"),
    "acceptance_per_request": ("0..1", "each sampled request's acceptance (the report's box plot)"),
    "acceptance_aggregate": (
        "0..1",
        "token-weighted draft acceptance of the timed requests, from the engine's own counters"),
    "audit_acceptance_aggregate": ("0..1", "the same, recomputed by the audit (equal for greedy)"),
    "replay_acceptance_aggregate": (
        "0..1",
        "token-weighted acceptance over the acceptance slice's greedy replay (null when sampling)"),
    "audit_near_ties": (
        "count",
        "draft decisions that the engine took the other way from the audit's replay at a near-tie, the fewest"
        " that explain its counters (0 in float32; null when the counters are not checked)"),
    "agreement_mean": (
        "0..1",
        "per-token agreement per request (the seed's \"acceptance rate\")"),
    "agreement_p50": (
        "0..1",
        "per-token agreement per request (the seed's \"acceptance rate\")"),
    "agreement_p95": (
        "0..1",
        "per-token agreement per request (the seed's \"acceptance rate\")"),
    "alpha": ("0..1", "aggregate agreement: the estimate of α"),
    "mean_accepted_length": ("tokens", "new tokens per verifier call"),
    "verifier_calls_per_token": ("calls", "its inverse"),
    "position_acceptance": ("0..1", "acceptance at each block position"),
    "accept_counts": (
        "count",
        "histogram: `[i]` = steps that accepted exactly i draft tokens (the engine's own for specperf and "
        "vLLM, the audit's for `hf`; null when neither exists)"),
    "exact_match_rate": ("0..1", "requests whose tokens equal the baseline's"),
    "first_divergence": ("index", "per request, the first token that differs from the baseline (null = none)"),
    "divergence_margins": (
        "logit",
        "per request, at its first divergence: the verifier's logit of the baseline's token minus that of "
        "this case's, from the baseline's own path (null = no divergence)"),
    "divergence_margin_steps": (
        "steps",
        "per request: the absolute margin in rounding steps of the dtype at the two logits' magnitude (null ="
        " no divergence, or float32)"),
    "near_tie_tolerance": (
        "steps",
        "the largest margin, in steps of the dtype, that counts as a near-tie (4 in float16/bfloat16, 0 in "
        "float32)"),
    "exact_or_near_tie_rate": ("0..1", "requests that match exactly or part only at a near-tie"),
    "exact_match_gated": (
        "0..1",
        "what `min_exact_match` bounds: `exact_match_rate` in float32, `exact_or_near_tie_rate` in "
        "float16/bfloat16, null when sampling"),
    "cost_ratio": ("", "c = draft step time / verifier step time (0 for prompt lookup)"),
    "verify_cost": ("", "v(k+1) = time of a (k+1)-token verifier forward / a 1-token one"),
    "expected_speedup": ("x", "(1 - α^(k+1)) / ((1 - α)(k c + v(k+1))): Leviathan's, with the measured verify cost"),
    "efficiency": (
        "",
        "measured speedup / expected (`cost_ratio`, `verify_cost`, `expected_speedup` and `efficiency` are "
        "null at batch > 1: the step costs are measured at batch 1)"),
    "speedup_bound": (
        "x",
        "the speedup the engine's own forward costs allow for the timed requests' recorded work, if the loop "
        "cost nothing else: (P_v + (N - 1) v(1)) / (P_v + P_d + Σ v(w) + (draft calls - 1) c) summed over "
        "requests, with each prompt's prefill by verifier (P_v) and draft (P_d), and each verify call after the "
        "prefill priced at the w tokens it verified (a step that drafted nothing: v(1); see Which k); with full "
        "blocks and without prefills, tokens per verifier call / (k c + v(k+1)) (null at batch > 1 and for vLLM)"),
    "bound_efficiency": ("", "measured speedup / `speedup_bound`"),
    "predicted_tokens_per_call_by_k": (
        "tokens",
        "`{\"1\": ..., \"8\": ...}`: tokens per verifier call specperf's loop gets at each k on the acceptance "
        "slice (exact, from the greedy replay)"),
    "predicted_speedup_by_k": (
        "x",
        "`{\"1\": ..., \"8\": ...}`: predicted speedup at each k (see Which k); null when sampling, at batch > 1 "
        "and for vLLM"),
    "best_k": ("", "the k with the highest predicted speedup"),
    "flops_per_token": ("FLOP", "2 x parameters x tokens processed, verifier and draft, per new token"),
    "flop_speedup": (
        "x",
        "baseline FLOPs / speculative FLOPs for the same tokens (below 1: verifying costs compute; "
        "deterministic)"),
    "injected_faults": (
        "",
        "null, except in the gate studies' runs (`-p tests.plugins.inject_faults` with `SPECPERF_INJECT` set, "
        "see Gate quality): such a file measures the gates, not the code"),
}


def _type_name(hint: object) -> str:
    """A type hint as the JSON reader sees it; ``or`` for ``|``, which would split a markdown cell."""
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    return text.replace("typing.", "").replace("NoneType", "None").replace(" | ", " or ")


def contract_table() -> str:
    """The contract as a markdown table: key, JSON type, unit, meaning; baseline cases carry the keys marked so."""
    import typing

    from specperf.analysis.contract import BaseInfo, DraftInfo

    hints = typing.get_type_hints(DraftInfo)  # declaration order: the baseline's keys, then a draft case's
    baseline = set(BaseInfo.__annotations__)
    missing = sorted(set(hints) - set(FIELDS))
    if missing:
        raise ValueError(f"contract keys without a description: {missing}; fix: add them to FIELDS")
    lines = ["| key | type | unit | baseline too | meaning |", "| --- | --- | --- | --- | --- |"]
    for key in hints:
        unit, meaning = FIELDS[key]
        lines.append(f"| `{key}` | `{_type_name(hints[key])}` | {unit} | {'yes' if key in baseline else ''} | "
                     f"{meaning} |")
    return "\n".join(lines)


# Serving mode: the keys only server cases (``engine: server``) carry, besides every key of a draft case. A server
# case's latency, throughput and speedup keys above are per request against the twin server's requests at the same
# load. The twin's keys (``twin_`` + a level key) are described from the level key's own entry.
_LEVEL_FIELDS: dict[str, tuple[str, str]] = {
    "requests": ("count", "timed requests sent at this level, all rounds"),
    "completed": ("count", "requests that streamed to the end"),
    "failed": ("count", "requests that failed (a failure fails the case, naming the request)"),
    "duration_s": ("s", "the level's wall time, first send to last end, summed over rounds"),
    "output_tokens": ("count", "output tokens of completed requests (the server's usage)"),
    "output_tok_s": ("tok/s", "output tokens / duration_s"),
    "request_s": ("req/s", "completed requests / duration_s"),
    "goodput_req_s": ("req/s", "requests meeting every `serving.slo` objective / duration_s; null without SLOs"),
    "slo_attainment": ("", "share of completed requests meeting every `serving.slo` objective; null without SLOs"),
    "chunks_per_request_mean": ("count", "streamed chunks carrying output, per request"),
    "tokens_per_chunk_mean": ("tokens", "output tokens per chunk, pooled (several under speculation)"),
}
_LATENCIES = {
    "ttft": "time to first token: send to the first chunk carrying output (vLLM bench)",
    "tpot": "time per output token after the first, per request: (E2EL - TTFT) / (output tokens - 1) (vLLM bench)",
    "itl": ("inter-token latency per token: a chunk of n tokens g after the previous one counts as n gaps of g/n "
            "(vLLM bench counts one gap per chunk: `chunk_itl_ms`)"),
    "e2el": "end-to-end latency of a request: send to its last chunk (vLLM bench)",
}
for _name, _meaning in _LATENCIES.items():
    for _stat in ("p50", "p95", "p99", "mean"):
        _LEVEL_FIELDS[f"{_name}_ms_{_stat}"] = ("ms", f"{_meaning}; {_stat} over requests (ITL: over tokens)")
for _stat in ("p50", "p95", "p99"):
    _LEVEL_FIELDS[f"chunk_itl_ms_{_stat}"] = ("ms", f"gaps between streamed chunks, vLLM bench's ITL; {_stat}")

SERVER_FIELDS: dict[str, tuple[str, str]] = {
    "load": ("", "the load level: `c4` = concurrency 4 (closed loop), `r2` = 2 requests/s (open loop), `rinf`"),
    "concurrency": ("requests", "requests in flight at all times (closed loop); null for a request rate"),
    "request_rate": ("req/s", "mean arrival rate (open loop, gamma gaps of shape `serving.burstiness`); null for a "
                     "concurrency or `inf`"),
    **{key: (unit, f"the speculative server: {meaning}") for key, (unit, meaning) in _LEVEL_FIELDS.items()},
    **{f"twin_{key}": (unit, f"the twin server (no speculation), same load: {meaning}")
       for key, (unit, meaning) in _LEVEL_FIELDS.items()},
    "tpot_speedup": ("x", "twin TPOT p50 / speculative TPOT p50 at the same load (below 1: speculation stopped "
                     "paying); gate with `min_tpot_speedup`"),
    "throughput_speedup": ("x", "speculative output tok/s / the twin's at the same load"),
    "ttft_ratio": ("x", "speculative TTFT p50 / the twin's (above 1: speculation made the first token later)"),
    "server_acceptance_rate": ("", "accepted / draft tokens from the server's /metrics counters, differenced "
                               "around the timed requests; null when the server exposes none"),
    "server_mean_acceptance_length": ("tokens", "1 + accepted / drafts (tokens per verify step), from /metrics"),
    "server_position_acceptance": ("", "[i] = accepted at draft position i / drafts, from /metrics"),
    "server_draft_tokens": ("count", "draft tokens proposed over the timed requests, from /metrics"),
    "server_accepted_tokens": ("count", "draft tokens accepted over the timed requests, from /metrics"),
    "server_metrics_note": ("", "why the /metrics figures are null (no endpoint, no speculative counters); null "
                            "when they are measured"),
}


def server_table() -> str:
    """The keys only server cases carry, as a markdown table like :func:`contract_table`'s."""
    import typing

    from specperf.analysis.contract import DraftInfo, ServerInfo

    hints = {key: hint for key, hint in typing.get_type_hints(ServerInfo).items()
             if key not in DraftInfo.__annotations__}
    missing = sorted(set(hints) - set(SERVER_FIELDS))
    if missing:
        raise ValueError(f"server contract keys without a description: {missing}; fix: add them to SERVER_FIELDS")
    lines = ["| key | type | unit | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key}` | `{_type_name(hint)}` | {SERVER_FIELDS[key][0]} | {SERVER_FIELDS[key][1]} |"
              for key, hint in hints.items()]
    return "\n".join(lines)
