"""Model loading: the embedded family offline, local paths, and the errors a user meets."""

from __future__ import annotations

import pytest
import torch

import specperf
from specperf.bench.models import check_same_tokenizer, load_model, resolve_device
from specperf.config import EMBEDDED_MODELS
from specperf.data import apply_slice, fit_prompts, load_records
from tests.tiny_models import tiny_gpt2

FAMILY = [f"embedded:{name}" for name in EMBEDDED_MODELS]


@pytest.fixture(scope="module")
def family() -> dict[str, specperf.bench.models.LoadedModel]:
    return {name: load_model(name, device="cpu") for name in FAMILY}


def test_embedded_family_loads_offline(family, monkeypatch):
    for loaded in family.values():
        assert loaded.model.config.model_type == "gpt2"
        assert not loaded.model.training
        assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
        assert loaded.n_params == sum(p.numel() for p in loaded.model.parameters())
    sizes = [family[name].n_params for name in FAMILY]
    assert sizes[0] > max(sizes[1:]), "the verifier is the largest model of the family"
    assert sizes[1] < sizes[2] < sizes[3], "drafts come in graded sizes"


def test_family_shares_one_tokenizer(family):
    vocabularies = [loaded.tokenizer.get_vocab() for loaded in family.values()]
    assert all(v == vocabularies[0] for v in vocabularies)
    for name in FAMILY[1:]:
        check_same_tokenizer(family[FAMILY[0]], family[name])  # no error


def test_weights_fit_the_size_budget():
    from specperf.embedded import WEIGHTS_DIR

    total = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    assert total <= 40 * 1024 * 1024


def test_local_path_loads(tmp_path, family):
    model = tiny_gpt2(vocab=len(family["embedded:verifier"].tokenizer))
    model.save_pretrained(tmp_path)
    family["embedded:verifier"].tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.n_params == sum(p.numel() for p in model.parameters())


def test_different_tokenizer_is_refused(tmp_path, family):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a different corpus entirely"] * 20, vocab_size=300, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    tiny_gpt2(vocab=300).save_pretrained(tmp_path)
    other = load_model(str(tmp_path), device="cpu")
    with pytest.raises(specperf.ModelError, match=r"different tokenizer from verifier 'embedded:verifier'"):
        check_same_tokenizer(family["embedded:verifier"], other)


def test_unknown_embedded_name_lists_the_family():
    with pytest.raises(specperf.ModelError, match="embedded:draft-small"):
        load_model("embedded:draft-huge")


def test_unavailable_hub_model_says_how_to_fix(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: set the constant too, so no network is tried.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(specperf.ModelError, match="not available.*local path"):
        load_model("no-such-org/no-such-model-xyz", device="cpu")


def test_cuda_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(specperf.ModelError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_bad_dtype_and_device_are_refused():
    with pytest.raises(specperf.ModelError, match="unknown dtype"):
        load_model("embedded:verifier", dtype="float8")
    with pytest.raises(specperf.ModelError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.parametrize("draft", FAMILY[1:])
def test_embedded_drafts_are_lossless(family, draft):
    verifier = family["embedded:verifier"]
    records = apply_slice(load_records("embedded"), "0:3")
    prompts = fit_prompts(records, verifier.tokenizer, max_context=verifier.model.config.n_positions,
                          max_new_tokens=32).prompt_ids
    drafter = specperf.ModelDrafter(family[draft].model)
    for prompt in prompts:
        expected = specperf.decode(verifier.model, prompt, max_new_tokens=32).tokens
        result = specperf.decode(verifier.model, prompt, drafter=drafter, k=4, max_new_tokens=32)
        assert result.tokens == expected
        assert result.accepted > 0, "a trained draft agrees with its verifier at least sometimes"
