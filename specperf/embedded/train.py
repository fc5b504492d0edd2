"""The embedded family's reproducible training recipe: tokenizer, verifier, and distilled drafts, CPU only.

    python -m specperf.embedded.train --out specperf/embedded/weights

Fixed seeds throughout. The corpus is the synthetic PubMedQA-shaped train split (specperf.data.synth), never
the eval split the benchmark prompts come from. Progress is logged; the step counts are sized for a 30-minute budget
on a 2-core CPU. The result is a byte-level BPE tokenizer shared by all models, a GPT-2 verifier trained on the corpus,
and GPT-2 drafts of graded sizes distilled from the verifier (KL to its next-token distribution, plus cross-entropy).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from specperf.data.synth import END_MARKER, train_corpus
from specperf.embedded import TOKENIZER_DIR, WEIGHTS_DIR

log = logging.getLogger(__name__)

ANSWER_CUE = "Answer:"  # the default template's last words: the answer follows


@dataclass(frozen=True)
class Arch:
    """A GPT-2 shape."""

    n_layer: int
    n_embd: int
    n_head: int


@dataclass
class Recipe:
    """Every knob of the recipe, with the value the shipped weights were trained with."""

    seed: int = 0
    n_docs: int = 4000  # synthetic training documents (about 250 tokens each); more than the steps consume
    n_val_docs: int = 200  # held-out train-split documents for the validation loss
    vocab_size: int = 4096  # byte-level BPE; small, so the output projection stays cheap
    n_positions: int = 768  # prompts are at most ~550 tokens plus 64-128 new ones
    verifier: Arch = Arch(n_layer=6, n_embd=384, n_head=6)
    drafts: dict[str, Arch] = field(
        default_factory=lambda: {
            # Tiny, and one layer cannot form the induction heads that copy from the abstract: the weak draft.
            "draft-small": Arch(n_layer=1, n_embd=64, n_head=2),
            # Wider: agrees more at little more cost; the speed winner on a CPU, where a draft forward's cost is
            # mostly fixed per-call overhead.
            "draft-medium": Arch(n_layer=1, n_embd=160, n_head=2),
            # Closest to the verifier and slowest: high agreement, little speedup (the seed's gpt2-large).
            "draft-large": Arch(n_layer=4, n_embd=256, n_head=4),
        }
    )
    batch_size: int = 8  # documents per step (~2k tokens); a verifier step takes ~2.4 s on 2 cores
    verifier_steps: int = 320  # ~13 minutes: the bulk of the 30-minute budget
    verifier_lr: float = 2e-3
    draft_steps: int = 330  # one teacher forward feeds all three drafts: ~2.5 s a step
    draft_lr: float = 3e-3
    warmup_steps: int = 30
    kd_weight: float = 0.8  # draft loss = kd_weight * KL(p_verifier || q_draft) + (1 - kd_weight) * CE
    answer_weight: float = 4.0  # KD weight of answer positions relative to the prompt's
    threads: int = 2


def train_tokenizer(texts: list[str], vocab_size: int) -> GPT2TokenizerFast:
    """Byte-level BPE, as GPT-2's, with GPT-2's end-of-text token."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[END_MARKER],
                            show_progress=False)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=END_MARKER, eos_token=END_MARKER,
                                  unk_token=END_MARKER)
    tokenizer.pad_token = END_MARKER
    return tokenizer


def encode_docs(tokenizer: GPT2TokenizerFast, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids of each document, cut to ``max_len``."""
    return [ids[:max_len] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


Batch = tuple[torch.Tensor, torch.Tensor, list[int]]


def batches(docs: list[list[int]], batch_size: int, pad_id: int, rng: random.Random) -> Iterator[Batch]:
    """Endless shuffled batches of similar-length documents, right-padded: (ids (B, L), mask (B, L), doc indices)."""
    order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    while True:
        rng.shuffle(groups)
        for group in groups:
            width = max(len(docs[i]) for i in group)
            ids = torch.full((len(group), width), pad_id, dtype=torch.long)  # (B, L)
            mask = torch.zeros((len(group), width), dtype=torch.long)  # (B, L)
            for row, i in enumerate(group):
                ids[row, : len(docs[i])] = torch.tensor(docs[i])
                mask[row, : len(docs[i])] = 1
            yield ids, mask, group


def build_model(arch: Arch, vocab_size: int, n_positions: int, eos_id: int) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_layer=arch.n_layer, n_embd=arch.n_embd,
                        n_head=arch.n_head, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def lm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over real (unpadded) positions. logits (B, L, V), ids/mask (B, L)."""
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # (B, L-1)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || q_student) per position, weighted by ``mask``. student/teacher (B, L, V), mask (B, L)."""
    log_q = F.log_softmax(student, dim=-1)
    log_p = F.log_softmax(teacher, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, L)
    return (kl * mask).sum() / mask.sum()


@torch.no_grad()
def val_loss(model: GPT2LMHeadModel, val: list[list[int]], pad_id: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for ids, mask, _ in _fixed_batches(val, 16, pad_id):
        logits = model(input_ids=ids, attention_mask=mask).logits
        n = int(mask[:, 1:].sum())
        total += float(lm_loss(logits, ids, mask)) * n
        count += n
    model.train()
    return total / count


def _fixed_batches(docs: list[list[int]], size: int, pad_id: int) -> Iterator[Batch]:
    it = batches(docs, size, pad_id, random.Random(0))
    for _ in range(math.ceil(len(docs) / size)):
        yield next(it)


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)


def train_verifier(model: GPT2LMHeadModel, train: list[list[int]], recipe: Recipe, pad_id: int) -> list[float]:
    """Plain language-model training. Returns the loss per step."""
    model.train()
    opt = _optimizer(model, recipe.verifier_lr)
    stream = batches(train, recipe.batch_size, pad_id, random.Random(recipe.seed))
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(recipe.verifier_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe.verifier_steps, recipe.verifier_lr, recipe.warmup_steps)
        ids, mask, _ = next(stream)
        loss = lm_loss(model(input_ids=ids, attention_mask=mask).logits, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        _progress("verifier", step, recipe.verifier_steps, losses, start)
    model.eval()
    return losses


def answer_focus(mask: torch.Tensor, group: list[int], answer_starts: list[int], weight: float) -> torch.Tensor:
    """Per-position KD weights (B, L): ``weight`` from the position that predicts the answer's first token on.

    Drafts are judged by agreement along the verifier's answers, which are a small part of each document.
    """
    focus = mask.float()  # (B, L)
    for row, i in enumerate(group):
        focus[row, max(answer_starts[i] - 1, 0):] *= weight
    return focus


def distill_drafts(teacher: GPT2LMHeadModel, drafts: dict[str, GPT2LMHeadModel], train: list[list[int]],
                   answer_starts: list[int], recipe: Recipe, pad_id: int) -> dict[str, list[float]]:
    """Train every draft on the same batches; one teacher forward per batch serves them all."""
    teacher.eval()
    opts = {name: _optimizer(model.train(), recipe.draft_lr) for name, model in drafts.items()}
    stream = batches(train, recipe.batch_size, pad_id, random.Random(recipe.seed + 1))
    losses: dict[str, list[float]] = {name: [] for name in drafts}
    start = time.perf_counter()
    for step in range(recipe.draft_steps):
        ids, mask, group = next(stream)
        focus = answer_focus(mask, group, answer_starts, recipe.answer_weight)  # (B, L)
        with torch.no_grad():
            teacher_logits = teacher(input_ids=ids, attention_mask=mask).logits  # (B, L, V)
        for name, model in drafts.items():
            for param_group in opts[name].param_groups:
                param_group["lr"] = lr_at(step, recipe.draft_steps, recipe.draft_lr, recipe.warmup_steps)
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, L, V)
            loss = recipe.kd_weight * kd_loss(logits, teacher_logits, focus) + (1 - recipe.kd_weight) * lm_loss(
                logits, ids, mask)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opts[name].step()
            losses[name].append(loss.item())
        _progress("drafts", step, recipe.draft_steps, losses[next(iter(drafts))], start)
    for model in drafts.values():
        model.eval()
    return losses


def _progress(what: str, step: int, total: int, losses: list[float], start: float) -> None:
    if step % 25 == 0 or step == total - 1:
        elapsed = time.perf_counter() - start
        eta = elapsed / (step + 1) * (total - step - 1)
        recent = sum(losses[-25:]) / len(losses[-25:])
        log.info("%s step %d/%d  loss %.3f  %.0fs elapsed, ~%.0fs left", what, step + 1, total, recent, elapsed, eta)


def save_model(model: GPT2LMHeadModel, out: Path) -> None:
    """fp16 safetensors: half the bytes, and the models are loaded back in float32 on a CPU anyway."""
    model.half().save_pretrained(out, safe_serialization=True)
    model.float()


@dataclass
class Corpus:
    tokenizer: GPT2TokenizerFast
    train: list[list[int]]
    val: list[list[int]]
    answer_starts: list[int]  # per train doc: index of the answer's first token


def _corpus(recipe: Recipe, tokenizer: GPT2TokenizerFast | None) -> Corpus:
    texts = train_corpus(recipe.n_docs + recipe.n_val_docs, seed=recipe.seed)
    if tokenizer is None:
        tokenizer = train_tokenizer(texts[: recipe.n_docs], recipe.vocab_size)
    docs = encode_docs(tokenizer, texts, recipe.n_positions)
    prompts = [text[: text.rfind(ANSWER_CUE) + len(ANSWER_CUE)] for text in texts[: recipe.n_docs]]
    starts = [len(ids) for ids in encode_docs(tokenizer, prompts, recipe.n_positions)]
    log.info("corpus: %d train docs, %d tokens", recipe.n_docs, sum(map(len, docs[: recipe.n_docs])))
    return Corpus(tokenizer, docs[: recipe.n_docs], docs[recipe.n_docs :], starts)


def _summary(model: GPT2LMHeadModel, losses: list[float], val: list[list[int]], pad_id: int) -> dict[str, float]:
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "val_loss": round(val_loss(model, val, pad_id), 4),
            "final_train_loss": round(sum(losses[-25:]) / 25, 4)}


def _distill_phase(recipe: Recipe, corpus: Corpus, verifier: GPT2LMHeadModel, out: Path) -> dict[str, object]:
    pad_id = eos_id = corpus.tokenizer.eos_token_id
    vocab = len(corpus.tokenizer)
    drafts = {name: build_model(arch, vocab, recipe.n_positions, eos_id) for name, arch in recipe.drafts.items()}
    losses = distill_drafts(verifier, drafts, corpus.train, corpus.answer_starts, recipe, pad_id)
    for name, model in drafts.items():
        save_model(model, out / name)
    return {name: _summary(drafts[name], losses[name], corpus.val, pad_id) for name in drafts}


def _write_manifest(out: Path, recipe: Recipe, models: dict[str, object], seconds: dict[str, float]) -> None:
    manifest = {
        "recipe": asdict(recipe), "seconds": seconds, "models": models,
        "data": "synthetic PubMedQA-shaped train split (specperf.data.synth), never the eval split",
        "torch": torch.__version__,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("done: %s", json.dumps(manifest["models"]))


def run(recipe: Recipe, out: Path, *, drafts_only: bool = False) -> None:
    """Train the family (or, with ``drafts_only``, re-distill the drafts from the verifier in ``out``)."""
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if drafts_only:
        tokenizer = GPT2TokenizerFast.from_pretrained(out / TOKENIZER_DIR)
        verifier = GPT2LMHeadModel.from_pretrained(out / "verifier", dtype=torch.float32).eval()
        previous = json.loads((out / "manifest.json").read_text())
        models, seconds = {"verifier": previous["models"]["verifier"]}, {"verifier": previous["seconds"]["verifier"]}
        corpus = _corpus(recipe, tokenizer)
    else:
        corpus = _corpus(recipe, None)
        eos = corpus.tokenizer.eos_token_id
        verifier = build_model(recipe.verifier, len(corpus.tokenizer), recipe.n_positions, eos)
        losses = train_verifier(verifier, corpus.train, recipe, eos)
        corpus.tokenizer.save_pretrained(out / TOKENIZER_DIR)
        save_model(verifier, out / "verifier")
        models = {"verifier": _summary(verifier, losses, corpus.val, eos)}
        seconds = {"verifier": round(time.perf_counter() - began, 1)}
    phase = time.perf_counter()
    models.update(_distill_phase(recipe, corpus, verifier, out))
    seconds["drafts"] = round(time.perf_counter() - phase, 1)
    _write_manifest(out, recipe, models, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, metavar="DIR",
                        help="where to write the tokenizer, models and manifest (default: %(default)s)")
    parser.add_argument("--verifier-steps", type=int, default=Recipe.verifier_steps, metavar="N",
                        help="verifier optimizer steps (default: %(default)s)")
    parser.add_argument("--draft-steps", type=int, default=Recipe.draft_steps, metavar="N",
                        help="draft distillation steps (default: %(default)s)")
    parser.add_argument("--docs", type=int, default=Recipe.n_docs, metavar="N",
                        help="synthetic training documents (default: %(default)s)")
    parser.add_argument("--drafts-only", action="store_true",
                        help="keep the tokenizer and verifier in --out and re-distill the drafts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    recipe = Recipe(n_docs=args.docs, verifier_steps=args.verifier_steps, draft_steps=args.draft_steps)
    run(recipe, args.out, drafts_only=args.drafts_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
