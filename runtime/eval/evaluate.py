"""Held-out perplexity of a checkpoint, computed so that anyone can reproduce it bit for bit.

Why a fixed, order-free recipe: a competition is decided by this number, so it must be a pure
function of (checkpoint, data, tokenizer, seq_len, batch_size, max_batches, code). The held-out
split is packed into full ``seq_len`` rows (no padding), read in file order (no shuffling),
the model runs in ``eval`` mode (no dropout) under ``no_grad``, and the loss is summed per
batch in float64 as ``batch mean x predicted tokens``. Every row predicts the same number of
tokens, so the result is the exact token-weighted mean whatever the batch boundaries, and the
same inputs give the same float on the same machine and code.

Why the model is rebuilt from its *name* and the checkpoint only supplies tensors: a swarm
checkpoint holds parameters, not code. The built-in tiny models are constructed offline with
the shipped tokenizer's vocabulary (the positional table size is read back from the tensors),
any other name goes through ``AutoModelForCausalLM.from_pretrained``. Names, shapes and dtypes
are checked before anything is copied in, so a checkpoint for another architecture is a typed
:class:`ShapeMismatchError`, not a torch stack trace.

Why every checkpoint path is checked against an allowed directory: paths arrive on command
lines and in result files that other people wrote; resolving symlinks and refusing anything
outside the folder the operator named keeps ``benchmark`` from being pointed at arbitrary
files. Reading never writes: bad input leaves every file as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from swarm_tune.runtime.ops.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    CorruptCheckpointError,
    ShapeMismatchError,
    WrongRunError,
    check_inside,
    existing_inside,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from swarm_tune.runtime.ops.provenance import (
    code_version,
    sha256_file,
    sha256_tensor,
    sha256_text_source,
)
from swarm_tune.runtime.training.corpus import CORPUS_TRAIN, CORPUS_VALID, SHIPPED_CORPUS
from swarm_tune.runtime.training.data import TokenShard, load_dataset_shard
from swarm_tune.runtime.training.layer_shard import SHARD_KEY
from swarm_tune.runtime.training.lora import LORA_KEY, LoraSpec
from swarm_tune.runtime.training.lora import merge as merge_lora
from swarm_tune.runtime.training.models import TINY_MODELS, load_model
from swarm_tune.runtime.training.tokenizer import TextTokenizer, load_tokenizer

__all__ = [
    "BenchmarkResult",
    "EvalError",
    "ModelSource",
    "benchmark",
    "build_model",
    "check_inside",
    "eval_tokens",
    "load_model_source",
    "mean_token_loss",
    "resolve_checkpoint",
]

_WPE = "transformer.wpe.weight"  # GPT-2's learned positions: their count is part of the shape
_DEFAULT_POSITIONS = 128  # what build_learner gives tiny models for seq_len <= 128


class EvalError(ValueError):
    """Evaluation settings or inputs are unusable (bad seq_len, empty split, ...)."""


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_checkpoint(path: Path, allowed_dir: Path, run_id: str | None = None) -> Path:
    """A swarm checkpoint file (manifest or tensor file), a node's checkpoint folder (its
    latest complete checkpoint, of ``run_id`` if given) or a saved HF model folder."""
    resolved = existing_inside(path, allowed_dir)
    if resolved.is_file() or is_hf_folder(resolved):
        return resolved
    info = latest_checkpoint(resolved, run_id)
    if info is None:
        others = sorted({i.meta.run_id for i in list_checkpoints(resolved)})
        if run_id is not None and others:
            raise WrongRunError(
                f"{path}: checkpoints are from run {', '.join(map(repr, others))}, not {run_id!r}"
            )
        which = f" of run {run_id!r}" if run_id else ""
        raise CheckpointError(f"{path}: no complete checkpoint{which} in this folder")
    return check_inside(info.meta_path, allowed_dir)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Parameters to evaluate and where they came from."""

    path: Path  # what was resolved (manifest, tensor file or HF folder)
    tensor_path: Path  # the file whose bytes are the parameters
    sha256: str  # of ``tensor_path``
    tensors: dict[str, torch.Tensor] | None  # None for an HF folder (loaded with the model)
    meta: CheckpointMeta | None  # None for an HF folder


def load_model_source(
    path: Path,
    *,
    allowed_dir: Path,
    expected_run_id: str | None = None,
    expected_model: str | None = None,
) -> ModelSource:
    """Resolve and fully verify a checkpoint (see :func:`resolve_checkpoint`)."""
    resolved = resolve_checkpoint(path, allowed_dir, expected_run_id)
    if is_hf_folder(resolved):
        weights = sorted(resolved.glob("*.safetensors"))
        if len(weights) != 1:
            raise CorruptCheckpointError(
                f"{path}: expected one *.safetensors weights file, found {len(weights)}"
            )
        if expected_run_id is not None:
            raise CheckpointError(f"{path}: a model folder carries no run id to check")
        return ModelSource(resolved, weights[0], sha256_file(weights[0]), None, None)
    tensors, meta = load_checkpoint(
        resolved,
        allowed_dir=allowed_dir,
        expected_run_id=expected_run_id,
        expected_model=expected_model,
    )
    tensor_path = resolved.parent / meta.tensor_file
    # load_checkpoint verified this sha256 against the bytes it parsed.
    return ModelSource(resolved, tensor_path, meta.file_sha256, tensors, meta)


def _positions(tensors: Mapping[str, torch.Tensor] | None) -> int:
    if tensors is not None and _WPE in tensors and tensors[_WPE].dim() == 2:
        return int(tensors[_WPE].shape[0])
    return _DEFAULT_POSITIONS


def build_model(
    name: str, tensors: Mapping[str, torch.Tensor] | None = None, *, seed: int = 0
) -> tuple[torch.nn.Module, TextTokenizer, str | None]:
    """The model ``name`` (tiny built offline with ``seed``, else ``from_pretrained``), its
    tokenizer and the tokenizer's source (a file path for the shipped one, else the name)."""
    tok_source: str | None
    if name in TINY_MODELS:
        tok = load_tokenizer(None)
        tok_source = None
        model = load_model(
            name,
            "cpu",
            seed=seed,
            vocab_size=tok.vocab_size,
            eos_token_id=tok.eos_id,
            max_positions=_positions(tensors),
        )
    else:
        model = load_model(name, "cpu")
        tok = load_tokenizer(name)
        tok_source = name
    return model, tok, tok_source


def model_from_checkpoint(
    name: str, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any]
) -> tuple[torch.nn.Module, TextTokenizer, str | None]:
    """The model a node checkpoint's ``tensors`` describe: the whole model's parameters, or
    LoRA adapters (``extra`` says so) folded into the base they were trained on."""
    lora_record = extra.get(LORA_KEY)
    if lora_record is None:
        net, tok, tok_source = build_model(name, tensors)
        check_tensor_names(tensors, model_spec(net), complete=True)
        copy_into(net, tensors)
        return net, tok, tok_source
    spec, base_seed = LoraSpec.from_record(lora_record)
    base, tok, tok_source = build_model(name, None, seed=base_seed)
    return merge_lora(base, spec, tensors), tok, tok_source


def model_spec(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    # Same naming as HFLearner.parameters(): named_parameters() lists tied weights once.
    return {n: (tuple(p.shape), p.dtype) for n, p in model.named_parameters() if p.requires_grad}


def check_tensor_names(
    tensors: Mapping[str, torch.Tensor],
    spec: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    *,
    complete: bool,
) -> None:
    """Every tensor must be a model parameter with the right shape and dtype; with
    ``complete`` every parameter must be present."""
    extra = sorted(tensors.keys() - spec.keys())
    if extra:
        raise ShapeMismatchError(f"tensors the model does not have: {extra[:3]}")
    if complete:
        missing = sorted(spec.keys() - tensors.keys())
        if missing:
            raise ShapeMismatchError(f"model parameters missing from the checkpoint: {missing[:3]}")
    for name, t in tensors.items():
        shape, dtype = spec[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise ShapeMismatchError(
                f"{name}: {tuple(t.shape)}/{t.dtype} on disk, model needs {shape}/{dtype}"
            )


@torch.no_grad()
def copy_into(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    check_tensor_names(tensors, model_spec(model), complete=True)
    for name, t in tensors.items():
        params[name].copy_(t)


def eval_tokens(
    tok: TextTokenizer,
    data: str,
    split: str,
    seq_len: int,
    text_column: str = "text",
) -> tuple[TokenShard, str | None]:
    """Packed held-out rows and the SHA-256 of the text they came from (None for a hub
    dataset, identified by name and the token hash only)."""
    if seq_len < 2:
        raise EvalError("seq_len must be >= 2")
    shard = load_dataset_shard(data, 1, 0, tok, seq_len, split=split, text_column=text_column)
    if data == SHIPPED_CORPUS:
        text_path: Path | None = CORPUS_TRAIN if split == "train" else CORPUS_VALID
    else:
        text_path = Path(data) if Path(data).exists() else None
    return shard, (sha256_text_source(text_path) if text_path is not None else None)


@torch.no_grad()
def mean_token_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, int]:
    """Token-weighted mean next-token loss over all rows, and the number of tokens predicted."""
    if batch_size < 1:
        raise EvalError("batch_size must be >= 1")
    was_training = model.training
    model.eval()
    try:
        total = 0.0  # Python float = float64 accumulator
        tokens = 0
        rows = int(input_ids.shape[0])
        for start in range(0, rows, batch_size):
            batch = input_ids[start : start + batch_size]
            out: Any = model(input_ids=batch, labels=batch)
            n = int(batch.shape[0]) * (int(batch.shape[1]) - 1)
            total += float(out.loss.double()) * n
            tokens += n
            if progress is not None:  # sequences done, of all
                progress(min(start + batch_size, rows), rows)
    finally:
        model.train(was_training)
    if tokens == 0:
        raise EvalError("no tokens to evaluate")
    return total / tokens, tokens


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    checkpoint: str
    checkpoint_sha256: str
    model: str
    run_id: str | None
    round: int | None
    data: str
    split: str
    data_sha256: str | None
    tokens_sha256: str
    seq_len: int
    batch_size: int
    max_batches: int | None
    sequences: int
    tokens: int
    mean_loss: float
    perplexity: float
    code_version: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def benchmark(
    checkpoint: Path,
    *,
    allowed_dir: Path,
    model: str | None = None,
    run_id: str | None = None,
    data: str = SHIPPED_CORPUS,
    split: str = "validation",
    seq_len: int = 64,
    batch_size: int = 8,
    max_batches: int | None = None,
    text_column: str = "text",
    progress: Callable[[int, int], None] | None = None,
) -> BenchmarkResult:
    """Perplexity of ``checkpoint`` on ``split`` of ``data`` (see the module docstring)."""
    if max_batches is not None and max_batches < 1:
        raise EvalError("max_batches must be >= 1")
    src = load_model_source(
        checkpoint, allowed_dir=allowed_dir, expected_run_id=run_id, expected_model=model
    )
    if src.meta is not None:
        name = src.meta.model_name
        shard = src.meta.extra.get(SHARD_KEY)
        if isinstance(shard, dict):  # one slice of the blocks is not a model
            raise EvalError(
                f"{checkpoint}: holds layer shard {shard.get('index')} of {shard.get('total')} "
                "only; run `checkpoint reconstruct` on one checkpoint of every shard first"
            )
        assert src.tensors is not None
        net, tok, _ = model_from_checkpoint(name, src.tensors, src.meta.extra)
    else:
        name = model if model is not None else str(src.path)
        net, tok, _ = build_model(str(src.path))
    positions = getattr(getattr(net, "config", None), "n_positions", None)
    if isinstance(positions, int) and seq_len > positions:
        raise EvalError(f"seq_len {seq_len} exceeds the model's {positions} positions")
    shard, data_sha = eval_tokens(tok, data, split, seq_len, text_column)
    ids = shard.input_ids
    if max_batches is not None:
        ids = ids[: max_batches * batch_size]
    loss, tokens = mean_token_loss(net, ids, batch_size, progress)
    return BenchmarkResult(
        checkpoint=str(src.path),
        checkpoint_sha256=src.sha256,
        model=name,
        run_id=src.meta.run_id if src.meta else None,
        round=src.meta.round if src.meta else None,
        data=data,
        split=split,
        data_sha256=data_sha,
        tokens_sha256=sha256_tensor(ids),
        seq_len=seq_len,
        batch_size=batch_size,
        max_batches=max_batches,
        sequences=int(ids.shape[0]),
        tokens=tokens,
        mean_loss=loss,
        perplexity=math.exp(loss),
        code_version=code_version(),
    )
