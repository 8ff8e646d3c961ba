"""Deterministic data shards: documents -> this node's slice -> packed token sequences.

Why shard *documents* before tokenising: every node reads the same source and keeps only its
slice, so the cost of tokenising is split across the swarm and no two nodes ever train on the
same document. The slice uses exactly the arithmetic of Hugging Face ``Dataset.shard(...,
contiguous=True)`` so that a local file and a hub dataset are split the same way and a user can
reason about who holds what: shard ``i`` of ``n`` is one contiguous block, the first
``len % n`` blocks are one longer, the blocks are disjoint and cover every document.

Why pack into fixed-length sequences: with every sequence exactly ``seq_len`` real tokens (no
padding), the mean token loss of a micro-batch has the same denominator everywhere, so the
average of per-node gradients equals the gradient of the pooled batch. That is what makes a
swarm that reaches everyone exactly data-parallel training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swarm_tune.runtime.training.corpus import CORPUS_TRAIN, CORPUS_VALID, SHIPPED_CORPUS
from swarm_tune.runtime.training.tokenizer import TextTokenizer


class DataError(ValueError):
    """The data source or the shard request is unusable."""


class MissingHubDependencyError(DataError):
    """A hub dataset was asked for but the ``datasets`` library is not installed."""


@dataclass(frozen=True, slots=True)
class TokenShard:
    """One node's packed training (or held-out) sequences."""

    input_ids: torch.Tensor  # int64, shape [num_sequences, seq_len], CPU
    source: str
    num_shards: int
    index: int
    num_documents: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])


def shard_bounds(length: int, num_shards: int, index: int) -> tuple[int, int]:
    """``[start, end)`` of shard ``index``: the split of ``Dataset.shard(contiguous=True)``."""
    if num_shards < 1:
        raise DataError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= index < num_shards:
        raise DataError(f"shard index {index} outside [0, {num_shards})")
    if length < 0:
        raise DataError("length must be >= 0")
    div, mod = divmod(length, num_shards)
    start = div * index + min(index, mod)
    end = start + div + (1 if index < mod else 0)
    return start, end


def _local_documents(path: Path) -> list[str]:
    """One document per non-empty line; a folder is its ``*.txt`` files in sorted order."""
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"no .txt files under {path}")
    docs: list[str] = []
    for f in files:
        try:
            text = f.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {f}: {exc}") from exc
        docs.extend(line for line in text.splitlines() if line.strip())
    return docs


def _hub_documents(
    name: str, split: str, num_shards: int, index: int, text_column: str
) -> tuple[list[str], int]:
    try:
        import datasets  # optional and heavy: only imported on this path
    except ImportError as exc:
        raise MissingHubDependencyError(
            f"{name!r} is not a local file or folder, so it is taken as a Hugging Face dataset "
            "name, which needs the `datasets` library: pip install 'swarm-tune[hub]'"
        ) from exc
    try:
        ds: Any = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network errors, unknown names, missing splits
        raise DataError(f"cannot load dataset {name!r} split {split!r}: {exc}") from exc
    if text_column not in ds.column_names:
        raise DataError(f"dataset {name!r} has no column {text_column!r}: {ds.column_names}")
    part = ds.shard(num_shards=num_shards, index=index, contiguous=True)
    docs = [str(t) for t in part[text_column] if str(t).strip()]
    return docs, len(docs)


def pack_documents(docs: Sequence[str], tokenizer: TextTokenizer, seq_len: int) -> torch.Tensor:
    """Encode, join with end-of-text, cut into full ``seq_len`` rows (the tail is dropped)."""
    if seq_len < 2:
        raise DataError("seq_len must be >= 2 (a causal LM predicts the next token)")
    stream: list[int] = []
    for ids in tokenizer.encode_batch(docs):
        stream.extend(ids)
        stream.append(tokenizer.eos_id)
    rows = len(stream) // seq_len
    flat = torch.tensor(stream[: rows * seq_len], dtype=torch.int64)
    return flat.view(rows, seq_len)


def load_dataset_shard(
    source: str | Path,
    num_shards: int,
    index: int,
    tokenizer: TextTokenizer,
    seq_len: int,
    *,
    split: str = "train",
    text_column: str = "text",
) -> TokenShard:
    """Shard ``index`` of ``num_shards`` of ``source``, tokenised and packed.

    ``source`` is ``"tinytales"`` (the shipped corpus; ``split`` picks train or validation),
    a local text file or folder, or otherwise a Hugging Face dataset name.
    """
    src = str(source)
    if src == SHIPPED_CORPUS:
        path: Path | None = CORPUS_TRAIN if split == "train" else CORPUS_VALID
    else:
        path = Path(src) if Path(src).exists() else None
    if path is not None:
        all_docs = _local_documents(path)
        start, end = shard_bounds(len(all_docs), num_shards, index)
        docs = all_docs[start:end]
    else:
        shard_bounds(0, num_shards, index)  # validate the request before any download
        docs, _ = _hub_documents(src, split, num_shards, index, text_column)
    ids = pack_documents(docs, tokenizer, seq_len)
    if ids.shape[0] == 0:
        raise DataError(
            f"shard {index}/{num_shards} of {src!r} has fewer than {seq_len} tokens "
            f"({len(docs)} documents); use fewer shards or a shorter seq_len"
        )
    return TokenShard(ids, src, num_shards, index, len(docs))
