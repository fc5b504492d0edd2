"""Tiny random causal LMs built from configs (no hub, no weights on disk), and the prompts the engine tests decode."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

VOCAB = 97
EOS = 1


def tiny_gpt2(n_layer: int = 2, n_embd: int = 64, seed: int = 0, vocab: int = VOCAB,
              **config_changes: object) -> GPT2LMHeadModel:
    """A random GPT-2. A wide initializer spreads the logits, so fp32 rounding never flips an argmax."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=2, vocab_size=vocab, n_positions=256,
        initializer_range=0.3, bos_token_id=0, eos_token_id=EOS, **config_changes,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_llama(n_layer: int = 2, hidden: int = 64, seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layer,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3,
        bos_token_id=0, eos_token_id=EOS, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def clone_weights(model: torch.nn.Module) -> torch.nn.Module:
    """A separate model object with the same weights (an 'identical draft')."""
    twin = type(model)(model.config).eval()
    twin.load_state_dict(model.state_dict())
    return twin


def hf_greedy(model: torch.nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                         min_new_tokens=0, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


PROMPTS = [
    [5, 6, 7, 8, 9, 10, 5, 6, 7],
    [42],
    [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28, 84, 19, 71, 69, 39, 93, 75, 10],
]
