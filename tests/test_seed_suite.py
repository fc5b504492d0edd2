"""The seed's own suite (specperf/suites/gpt2-pubmedqa.yaml), unchanged, end to end and offline.

No machine here reaches the model hub, so the test builds what a GPU runner's pre-filled cache holds, in a temporary
HF_HOME, in the layouts huggingface_hub and datasets write:

- hub/models--ORG--NAME/snapshots/REV/ (+ refs/main) for the seed's five model ids: tiny random GPT-2 models, one
  shared tokenizer (the embedded family's), as stand-ins for gpt2-xl and its drafts;
- datasets/qiaojin___pub_med_qa/pqa_labeled/0.0.0/HASH/ for `qiaojin/PubMedQA`: the prepared Arrow dataset that
  `datasets.load_dataset("qiaojin/PubMedQA", "pqa_labeled")` leaves behind, which it reuses offline. It is built by
  datasets' own parquet builder from a few made-up rows in the PubMedQA schema. (A hub-cache copy of the parquet
  file alone is not enough: datasets in offline mode does not resolve a hub dataset from it.)

Then `pytest perf/` runs the seed suite with HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1, and only command-line
options for a 2-prompt slice, 8 new tokens and float32 on CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from specperf.config import load_config
from specperf.embedded import TOKENIZER_DIR, WEIGHTS_DIR

# End to end: one whole `pytest perf/` of the seed suite in a subprocess.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "specperf" / "suites" / "gpt2-pubmedqa.yaml"
ROWS = 4


def _snapshot(hub: Path, model_id: str) -> Path:
    """An empty snapshot folder for ``model_id`` in huggingface_hub's cache layout, with refs/main pointing at it."""
    org, name = model_id.split("/")
    repo = hub / f"models--{org}--{name}"
    revision = hashlib.sha1(model_id.encode()).hexdigest()  # any 40-hex commit id will do
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    return snapshot


def fill_models(hub: Path, model_ids: list[str]) -> None:
    """Tiny random GPT-2s under the seed's ids. A wide initializer spreads the logits, so float32 rounding never
    flips an argmax between a one-token and a (k+1)-token forward."""
    tokenizer = AutoTokenizer.from_pretrained(WEIGHTS_DIR / TOKENIZER_DIR)
    for seed, model_id in enumerate(model_ids):
        torch.manual_seed(seed)
        config = GPT2Config(n_layer=2 if seed == 0 else 1, n_embd=64 if seed == 0 else 32, n_head=2,
                            vocab_size=len(tokenizer), n_positions=1024, initializer_range=0.3,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        snapshot = _snapshot(hub, model_id)
        GPT2LMHeadModel(config).eval().save_pretrained(snapshot)
        tokenizer.save_pretrained(snapshot)


def pubmedqa_rows() -> list[dict[str, object]]:
    """Made-up rows in the qiaojin/PubMedQA pqa_labeled schema (no text from PubMedQA)."""
    return [{"pubid": 10_000 + i, "question": f"Does intervention {i} shorten the hospital stay?",
             "context": {"contexts": [f"Background: patients of cohort {i} were followed for a year.",
                                      f"Results: the stay was {i + 2} days shorter in the treated group."],
                         "labels": ["BACKGROUND", "RESULTS"], "meshes": ["Humans", "Length of Stay"]},
             "long_answer": f"Intervention {i} shortened the stay.", "final_decision": "yes"} for i in range(ROWS)]


def fill_dataset(hf_home: Path, repo_id: str, config_name: str) -> None:
    """The prepared cache `load_dataset(repo_id, config_name)` leaves behind online, built by datasets' own parquet
    builder, at datasets/NAMESPACE___NAME/CONFIG/VERSION/HASH."""
    import pandas as pd
    from datasets.data_files import DataFilesDict
    from datasets.load import configure_builder_class
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig

    namespace, name = repo_id.split("/")
    snake = camelcase_to_snakecase(name)
    parquet = hf_home / "source" / f"{config_name}-train.parquet"
    parquet.parent.mkdir(parents=True)
    pd.DataFrame(pubmedqa_rows()).to_parquet(parquet)
    config = ParquetConfig(name=config_name, data_files=DataFilesDict.from_patterns({"train": [str(parquet)]}))
    builder_cls = configure_builder_class(Parquet, [config], config_name, snake)
    built = hf_home / "build"
    builder_cls(cache_dir=str(built), config_name=config_name, dataset_name=snake,
                hash="0" * 16).download_and_prepare()
    (hf_home / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.move(str(built / snake), str(hf_home / "datasets" / f"{namespace}___{snake}"))


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    suite = load_config(SEED)
    assert suite.dataset.source == "hf" and suite.dataset.path is not None
    hf_home = tmp_path_factory.mktemp("hf_home")
    fill_models(hf_home / "hub", [suite.verifier, *(d.model for d in suite.drafts if d.model)])
    fill_dataset(hf_home, suite.dataset.path, suite.dataset.hf_config)
    out = hf_home / "out.json"
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "COLUMNS": "400"}  # wide: the short summary keeps each failure whole
    cmd = [sys.executable, "-m", "pytest", "perf/", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--specperf-config={SEED}", "--specperf-slice=0:2", "--specperf-max-new-tokens=8",
           "--specperf-device=cpu", "--specperf-dtype=float32", f"--benchmark-json={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def test_every_case_of_the_seed_suite_runs_offline(seed_run):
    proc, out = seed_run
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = {b["extra_info"]["case_id"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    suite = load_config(SEED)
    assert set(cases) == {"baseline-0:2", *(f"{d.name}-k{k}-0:2" for d in suite.drafts for k in suite.k)}
    drafts = [info for info in cases.values() if info["draft"] is not None]
    assert {info["draft_model"] for info in drafts} == {d.model for d in suite.drafts}  # resolved by hub id
    assert all(info["verifier"] == suite.verifier and info["n_requests"] == 2 for info in cases.values())
    assert all(info["exact_match_rate"] == 1.0 and info["exact_match_gated"] == 1.0 for info in drafts)


def test_the_only_failures_are_the_declared_speed_floors(seed_run):
    """Random stand-in models are no faster than the verifier alone, so min_speedup may fail; nothing else may."""
    proc, _ = seed_run
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (proc.returncode == 1) == bool(failed)
    for line in failed:
        assert "RegressionDetected" in line and "speedup regressed" in line and "min_speedup = 1.0" in line, line
    assert "error" not in proc.stdout.rsplit("\n", 2)[-2].lower(), proc.stdout[-2000:]
