"""Regenerate the shipped corpus and tokenizer under ``data/``.

Run ``python -m swarm_tune.runtime.training.make_corpus``. The outputs are committed, so this
only needs re-running when the templates or the vocabulary size change; it exists so that the
files in ``data/`` are reproducible from source rather than opaque blobs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swarm_tune.runtime.training.corpus import DATA_DIR, TOKENIZER_PATH, write_corpus
from swarm_tune.runtime.training.tokenizer import DEFAULT_VOCAB_SIZE, train_bpe_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    args = parser.parse_args(argv)
    train, valid = write_corpus(args.out)
    # The tokenizer sees the training split only, so held-out loss is honest.
    lines = train.read_text("utf-8").splitlines()
    tok = train_bpe_tokenizer(lines, args.vocab_size)
    tok_path = args.out / TOKENIZER_PATH.name
    tok.save(tok_path)
    for p in (train, valid, tok_path):
        print(f"{p}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
