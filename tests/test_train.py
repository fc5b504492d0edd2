"""The embedded family's training recipe runs end to end and is reproducible (tiny shapes, a few steps)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer, GPT2LMHeadModel

from specperf.embedded.train import Arch, Recipe, run

# Model training (tiny shapes, a few steps, but several runs).
pytestmark = pytest.mark.slow


def _tiny(**overrides: object) -> Recipe:
    base = dict(n_docs=40, n_val_docs=8, vocab_size=400, n_positions=512, verifier=Arch(1, 32, 2),
                drafts={"draft-small": Arch(1, 16, 2)}, batch_size=4, verifier_steps=3, draft_steps=2,
                warmup_steps=1, threads=1)
    base.update(overrides)
    return Recipe(**base)


def test_recipe_writes_a_loadable_family(tmp_path):
    run(_tiny(), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["models"]) == {"verifier", "draft-small"}
    assert manifest["recipe"]["seed"] == 0 and "synthetic" in manifest["data"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    for name in ("verifier", "draft-small"):
        model = GPT2LMHeadModel.from_pretrained(tmp_path / name)
        assert model.config.vocab_size == len(tokenizer)
        assert manifest["models"][name]["parameters"] == sum(p.numel() for p in model.parameters())


def test_recipe_is_reproducible(tmp_path):
    run(_tiny(), tmp_path / "a")
    run(_tiny(), tmp_path / "b")
    for part in ("verifier/model.safetensors", "draft-small/model.safetensors", "tokenizer/tokenizer.json"):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes(), part


def test_drafts_only_keeps_the_verifier(tmp_path):
    run(_tiny(), tmp_path)
    verifier = (tmp_path / "verifier" / "model.safetensors").read_bytes()
    run(_tiny(draft_steps=3), tmp_path, drafts_only=True)
    assert (tmp_path / "verifier" / "model.safetensors").read_bytes() == verifier
    assert json.loads((tmp_path / "manifest.json").read_text())["recipe"]["draft_steps"] == 3
