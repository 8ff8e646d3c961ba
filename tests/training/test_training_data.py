"""Shards, tokenizer and the shipped corpus: real files, real tokenizers, no mocks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.training import (
    DataError,
    MissingHubDependencyError,
    load_dataset_shard,
    load_tokenizer,
    shard_bounds,
    train_bpe_tokenizer,
)
from swarm_tune.runtime.training.corpus import (
    CORPUS_SEED,
    CORPUS_TRAIN,
    CORPUS_VALID,
    DATA_DIR,
    TRAIN_STORIES,
    VALID_STORIES,
    generate_stories,
)


@given(length=st.integers(0, 5000), num_shards=st.integers(1, 64))
def test_shard_bounds_are_disjoint_and_cover(length: int, num_shards: int) -> None:
    covered: list[int] = []
    sizes = []
    for i in range(num_shards):
        start, end = shard_bounds(length, num_shards, i)
        assert 0 <= start <= end <= length
        covered.extend(range(start, end))
        sizes.append(end - start)
    assert covered == list(range(length))  # contiguous, in order, no gaps, no overlap
    assert max(sizes) - min(sizes) <= 1  # balanced like Dataset.shard(contiguous=True)


@pytest.mark.parametrize(("n", "i"), [(0, 0), (3, 3), (3, -1)])
def test_bad_shard_requests_are_typed_errors(n: int, i: int) -> None:
    with pytest.raises(DataError):
        shard_bounds(10, n, i)


def test_file_shards_hold_disjoint_documents_covering_the_file(tmp_path: Path) -> None:
    docs = [f"document number {i} says {'word ' * (i % 7)}end." for i in range(103)]
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(docs) + "\n\n", "utf-8")
    tok = train_bpe_tokenizer(docs, 300)
    seen: list[str] = []
    total_rows = 0
    for i in range(4):
        shard = load_dataset_shard(src, 4, i, tok, seq_len=8)
        # Decode the packed stream back into documents to see exactly what this shard holds.
        stream = tok.decode(shard.input_ids.reshape(-1).tolist())
        parts = [p for p in stream.split("<|endoftext|>") if p]
        start, end = shard_bounds(len(docs), 4, i)
        assert shard.num_documents == end - start
        # Every full document in the shard belongs to this shard's block (the tail is dropped).
        for p in parts[:-1]:
            assert p in docs[start:end]
        seen.extend(docs[start:end])
        total_rows += len(shard)
        assert shard.input_ids.dtype == torch.int64 and shard.seq_len == 8
    assert seen == docs


def test_folder_source_reads_all_txt_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("beta one\nbeta two\n", "utf-8")
    (tmp_path / "a.txt").write_text("alpha one\n", "utf-8")
    (tmp_path / "skip.md").write_text("not text corpus\n", "utf-8")
    tok = train_bpe_tokenizer(["alpha one", "beta one", "beta two"], 280)
    shard = load_dataset_shard(tmp_path, 1, 0, tok, seq_len=2)
    assert shard.num_documents == 3
    text = tok.decode(shard.input_ids.reshape(-1).tolist())
    assert text.startswith("alpha one<|endoftext|>beta one")


def test_too_small_shard_is_a_typed_error(tmp_path: Path) -> None:
    src = tmp_path / "tiny.txt"
    src.write_text("hi\n", "utf-8")
    tok = train_bpe_tokenizer(["hi"], 260)
    with pytest.raises(DataError, match="fewer than"):
        load_dataset_shard(src, 1, 0, tok, seq_len=64)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets present")
def test_hub_dataset_without_datasets_library_says_how_to_install() -> None:
    tok = load_tokenizer()
    with pytest.raises(MissingHubDependencyError, match=r"swarm-tune\[hub\]"):
        load_dataset_shard("someone/some-dataset-that-is-not-a-path", 2, 0, tok, seq_len=16)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_shipped_tokenizer_round_trips_any_text(text: str) -> None:
    tok = load_tokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_shipped_tokenizer_compresses_the_corpus() -> None:
    tok = load_tokenizer()
    sample = CORPUS_VALID.read_text("utf-8")[:20000]
    assert len(sample) / len(tok.encode(sample)) > 3.0  # BPE learned real merges
    assert 257 <= tok.vocab_size <= 2048


def test_shipped_corpus_is_reproducible_from_the_generator() -> None:
    train = CORPUS_TRAIN.read_text("utf-8").splitlines()
    valid = CORPUS_VALID.read_text("utf-8").splitlines()
    assert train == generate_stories(TRAIN_STORIES, CORPUS_SEED)
    assert valid == generate_stories(VALID_STORIES, CORPUS_SEED + 1)
    assert not set(train) & set(valid)  # held-out means held out
    total = sum(p.stat().st_size for p in DATA_DIR.iterdir())
    assert total < 2_000_000


def test_shipped_corpus_shards_for_a_six_node_swarm() -> None:
    tok = load_tokenizer()
    shards = [load_dataset_shard("tinytales", 6, i, tok, seq_len=64) for i in range(6)]
    assert sum(s.num_documents for s in shards) == TRAIN_STORIES
    rows = {tuple(r.tolist()) for s in shards for r in s.input_ids}
    assert len(rows) == sum(len(s) for s in shards)  # no sequence shared between nodes
