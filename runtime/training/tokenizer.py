"""Tokenizers behind one small interface: a locally trained byte-level BPE, or a hub tokenizer.

Why a local tokenizer at all: the tests and the simulator must not download anything, and a
tiny model wants a tiny vocabulary (about a thousand tokens) so that its embedding table does
not dominate the parameter count. Byte-level BPE never produces an unknown token, so any text a
user points the learner at can be encoded.

Why a protocol instead of passing ``transformers`` tokenizers around: the data pipeline only
needs ``encode`` / ``decode`` / the end-of-text id and the vocabulary size. Wrapping both kinds
keeps the pipeline (and its types) independent of which one is behind it, and keeps the heavy
``transformers`` import off the path that only uses the local tokenizer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from swarm_tune.runtime.training.corpus import TOKENIZER_PATH

EOS_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 1024


class TokenizerError(ValueError):
    """A tokenizer could not be built or loaded."""


class TextTokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class LocalTokenizer:
    """A ``tokenizers`` byte-level BPE with an end-of-text token."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        eos = tokenizer.token_to_id(EOS_TOKEN)
        if eos is None:
            raise TokenizerError(f"tokenizer has no {EOS_TOKEN!r} token")
        self._tok = tokenizer
        self._eos = int(eos)

    @classmethod
    def from_file(cls, path: str | Path) -> LocalTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise TokenizerError(f"cannot load tokenizer from {path}: {exc}") from exc

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int:
        return self._eos

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path), pretty=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer's full definition (keys the token cache, data.py)."""
        return hashlib.sha256(self._tok.to_str().encode()).hexdigest()


class HubTokenizer:
    """A ``transformers`` tokenizer (hub name or local folder) seen through ``TextTokenizer``."""

    def __init__(self, name_or_path: str) -> None:
        from transformers import AutoTokenizer  # heavy import, only on the hub path

        try:
            self._tok: Any = AutoTokenizer.from_pretrained(name_or_path)
        except Exception as exc:  # network, missing files, unknown name
            raise TokenizerError(f"cannot load tokenizer {name_or_path!r}: {exc}") from exc
        eos = self._tok.eos_token_id
        if eos is None:
            raise TokenizerError(f"tokenizer {name_or_path!r} has no end-of-text token")
        self._eos = int(eos)

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def eos_id(self) -> int:
        return self._eos

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._tok.encode(text, add_special_tokens=False)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        out = self._tok(list(texts), add_special_tokens=False)["input_ids"]
        return [[int(i) for i in ids] for ids in out]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids)))

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 of a fast tokenizer's definition; None (no token cache) for a slow one."""
        backend = getattr(self._tok, "backend_tokenizer", None)
        if backend is None:
            return None
        return hashlib.sha256(str(backend.to_str()).encode()).hexdigest()


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE
) -> LocalTokenizer:
    """Train a byte-level BPE on ``texts`` (deterministic for a given input)."""
    if vocab_size < 257:
        raise TokenizerError("byte-level BPE needs a vocabulary of at least 257 tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return LocalTokenizer(tok)


def load_tokenizer(name_or_path: str | None = None) -> TextTokenizer:
    """``None`` / ``"tinytales"``: the shipped tokenizer; a ``.json`` file: a local
    ``tokenizers`` file; anything else: a hub name or folder through ``transformers``."""
    if name_or_path is None or name_or_path == "tinytales":
        return LocalTokenizer.from_file(TOKENIZER_PATH)
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return LocalTokenizer.from_file(path)
    return HubTokenizer(name_or_path)
