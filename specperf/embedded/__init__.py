"""The embedded offline default: a self-trained GPT-2 family (weights/) and its training recipe (train.py)."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TOKENIZER_DIR = "tokenizer"  # the family's one tokenizer, beside the models in WEIGHTS_DIR
