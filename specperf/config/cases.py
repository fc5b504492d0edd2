"""The case matrix a suite defines: every (draft, k, slice, batch size), and one baseline per (slice, batch size).

Torch-free: the plugin builds the cases at configure time, before any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from specperf.config.schema import DraftSpec, SuiteConfig


@dataclass(frozen=True)
class Case:
    """One benchmark case: a draft (None for the verifier-only baseline) at block size k on a dataset slice,
    decoding batch_size requests together."""

    draft: DraftSpec | None
    k: int
    slice: str
    batch_size: int = 1
    load: str = ""  # serving mode: the load level, 'c4' (concurrency 4) or 'r2' (2 requests/s); '' otherwise

    @property
    def id(self) -> str:
        """Stable across commits: pytest-benchmark's --benchmark-compare matches runs by it. Batch 1 has no suffix;
        a server case ends in its load level, e.g. ``draft-medium-k4-0:32-c4``."""
        suffix = f"-b{self.batch_size}" if self.batch_size > 1 else ""
        suffix += f"-{self.load}" if self.load else ""
        if self.draft is None:
            return f"baseline-{self.slice}{suffix}"
        return f"{self.draft.name}-k{self.k}-{self.slice}{suffix}"

    @property
    def baseline(self) -> Case:
        """The verifier-only case this one is timed against: same slice, same batch size."""
        return Case(None, 0, self.slice, self.batch_size)


def build_cases(config: SuiteConfig) -> tuple[list[Case], list[Case]]:
    """(draft cases, baseline cases): every (draft, k, slice, batch size), and one baseline per (slice, batch size).

    transformers' assisted generation decodes one request at a time, so HF-engine drafts run at batch size 1 only.
    vLLM cases come last, grouped by engine (arguments, draft, k), so that each vLLM engine starts once and at most
    one speculative engine and its verifier-only twin are alive at a time. Server cases (serving mode) follow, one
    per load level, at batch size 1 (a server batches the concurrent requests itself), grouped by (draft, k) so each
    speculative server starts once.
    """
    slices, sizes = list(config.dataset.slices), list(config.batch_size)
    drafts = [Case(d, k, s, b) for s in slices for b in sizes for d in config.drafts for k in config.k
              if (b == 1 or d.engine != "hf") and d.engine != "server"]
    order = {d.name: i for i, d in enumerate(config.drafts)}
    # Engine arguments without the speculative config: the verifier-only engine a draft shares with others.
    shared = {d.name: dataclasses.replace(config.vllm_for(d), speculative_config=()) for d in config.drafts}
    first = {spec: min(order[n] for n in shared if shared[n] == spec) for spec in shared.values()}

    def engine_group(case: Case) -> tuple[int, int, int]:
        assert case.draft is not None
        return first[shared[case.draft.name]], order[case.draft.name], case.k

    vllm = sorted((c for c in drafts if c.draft is not None and c.draft.engine == "vllm"), key=engine_group)
    drafts = [c for c in drafts if c.draft is None or c.draft.engine != "vllm"] + vllm
    served = [Case(d, k, s, 1, load) for d in config.drafts if d.engine == "server" for k in config.k
              for s in slices for load in config.serving.loads]
    return drafts + served, [Case(None, 0, s, b) for s in slices for b in sizes]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``: a deterministic, balanced share of a suite's cases for one CI runner.

    Every case id of the suite (draft and baseline cases together) is sorted, and the i-th goes to shard
    ``i % count + 1``: the same split on every machine, shard sizes within one of each other.
    """

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, cases: list[Case], all_ids: list[str]) -> list[Case]:
        order = {case_id: i for i, case_id in enumerate(sorted(all_ids))}
        return [case for case in cases if order[case.id] % self.count == self.index - 1]
