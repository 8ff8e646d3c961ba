"""Model and device loading: any Hugging Face causal LM, or a tiny one built offline.

Why built-in tiny configs: tests, the simulator and CI must never download weights, yet they
must exercise the very same ``transformers`` model classes a real node fine-tunes. A two-layer
GPT-2 or Llama built from a config object is exactly that, in a few hundred thousand
parameters. Initialisation runs under a forked RNG seeded explicitly, so every node of a swarm
that is given the same seed starts from bit-identical weights (a precondition for averaging
gradients) and loading a model never disturbs the caller's global RNG.

Why check devices up front: ``--device cuda:3`` on a machine with one GPU should fail at
startup with a sentence, not deep inside the first forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

TINY_MODELS = ("tiny-gpt2", "tiny-llama")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class DeviceUnavailableError(ValueError):
    """The requested device does not exist on this machine."""


class ModelLoadError(ValueError):
    """The model name, path or dtype is unusable."""


def resolve_device(spec: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against what this machine has."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise DeviceUnavailableError(f"unknown device {spec!r}: {exc}") from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {spec!r} requested but CUDA is not available (CPU-only torch build "
                "or no GPU visible); use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceUnavailableError(f"device {spec!r} requested but only {count} GPU(s)")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceUnavailableError(f"device {spec!r} requested but MPS is not available")
        return dev
    raise DeviceUnavailableError(f"unsupported device type {dev.type!r} (cpu, cuda, mps)")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; one of {sorted(_DTYPES)}") from None


def _tiny_gpt2(vocab_size: int, eos: int, max_len: int) -> Any:
    from transformers import GPT2Config

    # Dropout off: updates are then a pure function of (weights, batch), which is what lets
    # the tests check averaging in closed form and the sim replay a run exactly.
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=max_len,
        n_embd=64,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
    )


def _tiny_llama(vocab_size: int, eos: int, max_len: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_len,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=True,
    )


_TINY_BUILDERS: dict[str, Callable[[int, int, int], Any]] = {
    "tiny-gpt2": _tiny_gpt2,
    "tiny-llama": _tiny_llama,
}


def load_model(
    name: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    eos_token_id: int = 0,
    max_positions: int = 256,
) -> torch.nn.Module:
    """A causal LM in training mode on ``device``.

    ``name`` is ``tiny-gpt2`` / ``tiny-llama`` (built offline from a config; ``vocab_size``,
    ``eos_token_id`` and ``max_positions`` shape it), or any Hugging Face model name or local
    path (loaded with ``AutoModelForCausalLM.from_pretrained``; the tiny-only arguments are
    ignored). ``seed`` fixes the initialisation of tiny models.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    from transformers import AutoModelForCausalLM  # heavy; keep module import cheap

    auto: Any = AutoModelForCausalLM  # untyped upstream

    model: Any
    if name in _TINY_BUILDERS:
        config = _TINY_BUILDERS[name](vocab_size, eos_token_id, max_positions)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = auto.from_config(config)
        if dt is not None:
            model = model.to(dtype=dt)
    else:
        try:
            model = auto.from_pretrained(name, dtype=dt)
        except Exception as exc:  # unknown name, no network, bad folder
            raise ModelLoadError(f"cannot load model {name!r}: {exc}") from exc
    model = model.to(dev)
    model.train()
    assert isinstance(model, torch.nn.Module)
    return model
