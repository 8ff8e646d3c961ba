"""A small GPT-2 written with ``save_pretrained`` (plus the shipped tokenizer): the offline
stand-in for a user's downloaded checkpoint, shared by the training and sim tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from swarm_tune.runtime.training.corpus import TOKENIZER_PATH


def write_pretrained(folder: Path, layers: int) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    fast: Any = PreTrainedTokenizerFast
    tok = fast(
        tokenizer_file=str(TOKENIZER_PATH),
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=layers,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
