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

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

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


# Local files go through ``datasets.load_dataset`` with the packaged builder for their type.
LOCAL_BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
_TOKEN_CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """Where tokenised shards (and the Arrow files of local sources) are kept between runs:
    ``$SWARM_CACHE_DIR``, else ``~/.cache/swarm-tune`` (the test suite points it at a
    temporary folder)."""
    env = os.environ.get("SWARM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "swarm-tune"


def _datasets() -> Any:
    try:
        import datasets  # heavy: only imported when a source other than the shipped corpus
    except ImportError as exc:
        raise MissingHubDependencyError(
            "reading a dataset other than the shipped corpus needs the `datasets` library: "
            "pip install 'swarm-tune[hub]'"
        ) from exc
    datasets.disable_progress_bars()  # a node logs JSON lines, not bars
    return datasets


def _local_files(path: Path) -> tuple[str, list[str]]:
    """(builder, files): a file by its suffix; a folder is its ``*.txt`` files, sorted."""
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise DataError(f"no .txt files under {path}")
        return "text", [str(f) for f in files]
    builder = LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:
        known = ", ".join(sorted(LOCAL_BUILDERS))
        raise DataError(f"{path}: unknown data file type {path.suffix!r} (one of: {known})")
    return builder, [str(path)]


def _open(src: str, path: Path | None, split: str, hf_cache: str) -> Any:
    """The whole source as a ``datasets.Dataset`` (a local file's split is the file)."""
    datasets = _datasets()
    try:
        if path is not None:
            builder, files = _local_files(path)
            return datasets.load_dataset(
                builder, data_files=files, split="train", cache_dir=hf_cache
            )
        return datasets.load_dataset(src, split=split, cache_dir=hf_cache)
    except DataError:
        raise
    except Exception as exc:  # network errors, unknown names, missing splits, bad files
        raise DataError(f"cannot load dataset {src!r} split {split!r}: {exc}") from exc


def _has_text(value: Any) -> bool:
    return value is not None and bool(str(value).strip())


def _shard_of(ds: Any, src: str, num_shards: int, index: int, text_column: str) -> Any:
    """Non-empty documents of ``text_column``, then ``shard(num_shards, index)``."""
    if text_column not in ds.column_names:
        raise DataError(
            f"dataset {src!r} has no column {text_column!r} (columns: {', '.join(ds.column_names)})"
        )
    kept = ds.filter(_has_text, input_columns=[text_column])
    start, end = shard_bounds(len(kept), num_shards, index)
    if start == end:
        raise DataError(
            f"shard {index}/{num_shards} of {src!r} is empty: {len(kept)} non-empty documents "
            f"for {num_shards} shards"
        )
    return kept.shard(num_shards=num_shards, index=index, contiguous=True)


def _cache_path(
    part: Any, text_column: str, tokenizer: TextTokenizer, seq_len: int, cache_dir: Path
) -> Path | None:
    """The token cache file of this shard, or None where the tokenizer has no fingerprint."""
    tok_fp = getattr(tokenizer, "fingerprint", None)
    if not isinstance(tok_fp, str):
        return None
    key = "|".join((_TOKEN_CACHE_VERSION, part._fingerprint, text_column, str(seq_len), tok_fp))
    return cache_dir / "tokens" / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"


def _read_cached(path: Path, seq_len: int) -> tuple[torch.Tensor, int] | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            ids = f.get_tensor("input_ids")
            docs = int((f.metadata() or {})["num_documents"])
    except Exception:  # absent, truncated or foreign: tokenise again
        return None
    if ids.dtype != torch.int64 or ids.dim() != 2 or ids.shape[1] != seq_len:
        return None
    return ids, docs


def _write_cached(path: Path, ids: torch.Tensor, num_documents: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({"input_ids": ids}, str(tmp), metadata={"num_documents": str(num_documents)})
    tmp.replace(path)  # atomic: a reader sees the old file or the whole new one


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
    cache_dir: Path | None = None,
) -> TokenShard:
    """Shard ``index`` of ``num_shards`` of ``source``, tokenised and packed.

    ``source`` is ``"tinytales"`` (the shipped corpus; ``split`` picks train or validation),
    a local file (text, json/jsonl, parquet, csv) or folder of ``.txt`` files, or otherwise
    a Hugging Face dataset name. Everything but the shipped corpus is read with
    ``datasets.load_dataset``; empty documents are dropped, then ``shard(num_shards, index,
    contiguous=True)`` picks this node's block. The packed tokens are cached under
    ``cache_dir`` (default ``default_cache_dir()``) keyed by the shard's dataset fingerprint,
    the column, ``seq_len`` and the tokenizer's fingerprint.
    """
    src = str(source)
    shard_bounds(0, num_shards, index)  # validate the request before reading anything
    if seq_len < 2:
        raise DataError("seq_len must be >= 2 (a causal LM predicts the next token)")
    if src == SHIPPED_CORPUS:  # the offline default: no datasets import, no cache
        path = CORPUS_TRAIN if split == "train" else CORPUS_VALID
        all_docs = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
        start, end = shard_bounds(len(all_docs), num_shards, index)
        return _packed(all_docs[start:end], tokenizer, seq_len, src, num_shards, index)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    local = Path(src) if Path(src).exists() else None
    part = _shard_of(
        _open(src, local, split, str(cache / "hf")), src, num_shards, index, text_column
    )
    cached_at = _cache_path(part, text_column, tokenizer, seq_len, cache)
    hit = _read_cached(cached_at, seq_len) if cached_at is not None else None
    if hit is not None:
        return TokenShard(hit[0], src, num_shards, index, hit[1])
    docs = [str(t) for t in part[text_column]]
    shard = _packed(docs, tokenizer, seq_len, src, num_shards, index)
    if cached_at is not None:
        _write_cached(cached_at, shard.input_ids, shard.num_documents)
    return shard


def _packed(
    docs: list[str], tokenizer: TextTokenizer, seq_len: int, src: str, num_shards: int, index: int
) -> TokenShard:
    ids = pack_documents(docs, tokenizer, seq_len)
    if ids.shape[0] == 0:
        raise DataError(
            f"shard {index}/{num_shards} of {src!r} has fewer than {seq_len} tokens "
            f"({len(docs)} documents); use fewer shards or a shorter seq_len"
        )
    return TokenShard(ids, src, num_shards, index, len(docs))
