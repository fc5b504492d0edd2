"""Load a model and its tokenizer by hub id, local path or ``embedded:`` name, on a device, in a dtype."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from specperf.config.schema import DEVICE_PATTERN, DTYPES, EMBEDDED_MODELS, EMBEDDED_PREFIX
from specperf.embedded import TOKENIZER_DIR, WEIGHTS_DIR
from specperf.engine.forward import ModelForward
from specperf.errors import ModelError

log = logging.getLogger(__name__)

# The config's dtype names, as torch dtypes.
TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPES}


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for decoding, with its tokenizer and the forward the engine runs it with."""

    name: str
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    n_params: int
    forward: ModelForward  # ``model`` with the suite's ``forward:`` choice: what the decoding loops and probes run


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU. Asking for CUDA without it is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_PATTERN.fullmatch(device):
        raise ModelError(f"unknown device {device!r}; fix: use one of auto, cpu, cuda or cuda:N (N a number)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA build {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ModelError(f"device {device!r} was asked for but CUDA is not available here (torch {torch.__version__}, "
                         f"{build}); fix: use --specperf-device cpu (or auto, or device: cpu in the suite), or "
                         "install a CUDA build of torch on a machine with an NVIDIA GPU")
    count = torch.cuda.device_count() if device.startswith("cuda:") else 0
    if device.startswith("cuda:") and int(device[5:]) >= count:
        raise ModelError(f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
                         f"cuda:0..cuda:{count - 1}; fix: pick one of them, or use cuda (the current device)")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in TORCH_DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return TORCH_DTYPES[dtype]


def model_location(name: str) -> str:
    """Where transformers should load ``name`` from: the packaged folder for ``embedded:`` names, else as given."""
    if not name.startswith(EMBEDDED_PREFIX):
        return name
    member = name[len(EMBEDDED_PREFIX):]
    if member not in EMBEDDED_MODELS:
        raise ModelError(f"unknown embedded model {name!r}; the embedded family is "
                         + ", ".join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS))
    folder = WEIGHTS_DIR / member
    if not (folder / "config.json").exists():
        raise ModelError(f"embedded model {name!r} has no weights at {folder}; reinstall specperf, or retrain the "
                         "family with `python -m specperf.embedded.train`")
    return str(folder)


def _tokenizer_location(name: str) -> str:
    return str(WEIGHTS_DIR / TOKENIZER_DIR) if name.startswith(EMBEDDED_PREFIX) else model_location(name)


def _unavailable(name: str, exc: Exception) -> ModelError:
    # huggingface_hub's own reading of the switch. specperf never sets it: `pytest perf/` is offline only when the
    # caller's environment says so (tests/conftest.py forces it for the test suite alone).
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    family = ", ".join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS)
    if offline:
        where = "offline mode is on (HF_HUB_OFFLINE is set in this environment)"
        fix = f"unset HF_HUB_OFFLINE and run once with network access, which downloads it into {cache}"
    else:
        where = "the hub could not be reached or has no such model"
        fix = f"check the model id, and run once with network access to the hub, which downloads it into {cache}"
    return ModelError(
        f"model {name!r} is not available: it is not a local folder, not in the Hugging Face cache ({cache}), "
        f"and {where}. Fix: {fix}; or point HF_HOME at a cache that holds it, pass a local path, or use the embedded "
        f"family ({family}). [{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}]"
    )


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer that belongs to model ``name``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(_tokenizer_location(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _unavailable(name, exc) from None


def load_model(name: str, *, device: str = "auto", dtype: str = "float32", trust_remote_code: bool = False,
               forward: str = "lean") -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, on ``device`` in ``dtype``, to run with ``forward``
    (``lean`` or ``transformers``, see :class:`~specperf.engine.forward.ModelForward`).

    ``trust_remote_code`` runs Python code shipped with a hub model; it stays off unless asked for.
    """
    from transformers import AutoModelForCausalLM

    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    location = model_location(name)
    log.info("loading %s on %s in %s", name, torch_device, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _unavailable(name, exc) from None
    model = model.to(torch_device).eval()  # type: ignore[arg-type]  # transformers types .to() for its own dtypes only
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    n_params = sum(p.numel() for p in model.parameters())
    return LoadedModel(name, model, tokenizer, torch_device, torch_dtype, n_params, ModelForward(model, forward))


def check_same_tokenizer(verifier: LoadedModel, draft: LoadedModel) -> None:
    """Refuse a draft whose tokenizer differs from the verifier's: token ids must mean the same text in both."""
    v_vocab, d_vocab = verifier.tokenizer.get_vocab(), draft.tokenizer.get_vocab()
    if v_vocab == d_vocab:
        return
    differing = sorted(set(v_vocab.items()) ^ set(d_vocab.items()), key=lambda kv: kv[1])[:3]
    raise ModelError(
        f"draft {draft.name!r} has a different tokenizer from verifier {verifier.name!r} "
        f"({len(d_vocab)} vs {len(v_vocab)} tokens; e.g. {differing}). Speculative decoding compares token ids, so "
        "the draft must share the verifier's tokenizer: pick a draft from the same model family. specperf does not "
        "guess an alignment between vocabularies."
    )
