"""Sources other than the shipped corpus go through ``datasets.load_dataset`` (data.py).

Offline, on files the test writes: the same documents as text, JSON lines, JSON, CSV and
Parquet give the same shards (empty documents dropped, then ``shard(n, i, contiguous)``);
a missing column and an empty shard are typed errors naming the problem; the packed tokens
are cached and a cache hit never calls the tokenizer; a node given a bad column or an empty
shard says so in one line, exits 2 and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import torch
import trio
from procs import run_node_once

from swarm_tune.runtime.net.node_main import run_node
from swarm_tune.runtime.ops.settings import load_settings
from swarm_tune.runtime.training.data import DataError, load_dataset_shard, shard_bounds
from swarm_tune.runtime.training.tokenizer import LocalTokenizer, train_bpe_tokenizer

DOCS = [f"story {i}: the {'red ' * (i % 5)}fox ran to the hill." for i in range(41)]
# Empty and blank documents anywhere in a source are dropped before sharding.
RAW = [*DOCS[:7], "", *DOCS[7:30], "   ", *DOCS[30:]]


def _write(kind: str, folder: Path, column: str = "text") -> Path:
    frame = pd.DataFrame({column: RAW, "label": list(range(len(RAW)))})
    if kind == "txt":
        path = folder / "docs.txt"
        path.write_text("\n".join(RAW) + "\n", "utf-8")
    elif kind == "jsonl":
        path = folder / "docs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    elif kind == "json":
        path = folder / "docs.json"
        path.write_text(json.dumps(frame.to_dict("records")))
    elif kind == "csv":
        path = folder / "docs.csv"
        frame.to_csv(path, index=False)
    else:
        path = folder / "docs.parquet"
        frame.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def tok() -> LocalTokenizer:
    return train_bpe_tokenizer(DOCS, 300)


def _shards(path: Path, tok: LocalTokenizer, cache: Path, column: str = "text") -> list[str]:
    out = []
    for i in range(3):
        shard = load_dataset_shard(path, 3, i, tok, seq_len=4, text_column=column, cache_dir=cache)
        start, end = shard_bounds(len(DOCS), 3, i)
        assert shard.num_documents == end - start
        out.append(tok.decode(shard.input_ids.reshape(-1).tolist()))
    return out


def test_every_local_format_gives_the_same_deterministic_shards(
    tmp_path: Path, tok: LocalTokenizer
) -> None:
    reference = None
    for kind in ("txt", "jsonl", "json", "csv", "parquet"):
        folder = tmp_path / kind
        folder.mkdir()
        column = "text" if kind == "txt" else "body"
        got = _shards(_write(kind, folder, column), tok, tmp_path / "cache", column)
        if reference is None:
            reference = got
            # Shard 1 holds the second block of non-empty documents, in order.
            start, _ = shard_bounds(len(DOCS), 3, 1)
            assert got[1].startswith("<|endoftext|>".join(DOCS[start : start + 2]))
        assert got == reference, kind


def test_a_missing_column_and_an_empty_shard_are_typed_errors(
    tmp_path: Path, tok: LocalTokenizer
) -> None:
    path = _write("jsonl", tmp_path, "body")
    with pytest.raises(DataError, match=r"has no column 'text' \(columns: body, label\)"):
        load_dataset_shard(path, 1, 0, tok, seq_len=4, cache_dir=tmp_path / "c")
    few = tmp_path / "few.jsonl"
    few.write_text('{"text": "one"}\n{"text": ""}\n{"text": "two"}\n')
    with pytest.raises(DataError, match=r"shard 2/3 of .* is empty: 2 non-empty documents"):
        load_dataset_shard(few, 3, 2, tok, seq_len=2, cache_dir=tmp_path / "c")
    odd = tmp_path / "docs.xml"
    odd.write_text("<a/>")
    with pytest.raises(DataError, match=r"unknown data file type '\.xml'"):
        load_dataset_shard(odd, 1, 0, tok, seq_len=2, cache_dir=tmp_path / "c")


class _NoEncode:
    """The same tokenizer, except that encoding fails: only a cache hit can succeed."""

    def __init__(self, inner: LocalTokenizer) -> None:
        self.inner = inner
        self.vocab_size = inner.vocab_size
        self.eos_id = inner.eos_id
        self.fingerprint = inner.fingerprint

    def encode(self, text: str) -> list[int]:
        raise AssertionError("tokenizer called on a cache hit")

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        raise AssertionError("tokenizer called on a cache hit")

    def decode(self, ids: Sequence[int]) -> str:
        return self.inner.decode(ids)


def test_tokenization_is_cached_per_shard_column_seq_len_and_tokenizer(
    tmp_path: Path, tok: LocalTokenizer
) -> None:
    path, cache = _write("parquet", tmp_path), tmp_path / "cache"
    first = load_dataset_shard(path, 2, 1, tok, seq_len=4, cache_dir=cache)
    assert len(list((cache / "tokens").glob("*.safetensors"))) == 1
    again = load_dataset_shard(path, 2, 1, _NoEncode(tok), seq_len=4, cache_dir=cache)
    assert torch.equal(first.input_ids, again.input_ids)
    assert again.num_documents == first.num_documents
    for other in ({"seq_len": 5}, {"index": 0}):
        kwargs: dict[str, int] = {"index": 1, "seq_len": 4, **other}
        with pytest.raises(AssertionError, match="cache hit"):
            load_dataset_shard(
                path, 2, kwargs["index"], _NoEncode(tok), kwargs["seq_len"], cache_dir=cache
            )
    other_tok = train_bpe_tokenizer(DOCS, 280)
    assert other_tok.fingerprint != tok.fingerprint
    fresh = load_dataset_shard(path, 2, 1, other_tok, seq_len=4, cache_dir=cache)
    assert len(list((cache / "tokens").glob("*.safetensors"))) == 2
    # Same documents, another vocabulary: the text agrees up to the dropped tail.
    head = tok.decode(first.input_ids.reshape(-1).tolist())[:200]
    assert other_tok.decode(fresh.input_ids.reshape(-1).tolist()).startswith(head)


def test_node_process_refuses_an_unknown_column_in_one_line(tmp_path: Path) -> None:
    data = _write("jsonl", tmp_path, "body")
    ckpt = tmp_path / "ckpt"
    env = {
        "SWARM_RUN_ID": "bad-data",
        "SWARM_MODEL_NAME": "tiny-gpt2",
        "SWARM_DATASET": str(data),
        "SWARM_DATASET_TEXT_FIELD": "nope",
        "SWARM_CHECKPOINT_DIR": str(ckpt),
    }
    res = run_node_once(env, tmp_path)  # the real process: its exit code and its stderr
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: SWARM_DATASET: "), res.stderr
    assert "has no column 'nope' (columns: body, label)" in lines[0]
    assert not ckpt.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_node_refuses_an_empty_shard_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write("jsonl", tmp_path, "body")
    settings = load_settings(  # the node's own entry, in this process (saves a start-up)
        run_id="bad-data",
        model_name="tiny-gpt2",
        dataset=str(data),
        dataset_text_field="body",
        num_shards=50,
        shard_index=49,
        checkpoint_dir=tmp_path / "ckpt",
        node_key_file=tmp_path / "key",
    )
    assert trio.run(run_node, settings) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: SWARM_DATASET: shard 49/50 of"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]
