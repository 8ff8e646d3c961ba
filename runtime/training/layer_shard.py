"""Layer shards: a node trains (and ships) only its slice of the model's transformer blocks.

Why freezing is enough for the whole node: the learner exchanges exactly the parameters that
require a gradient (hf_learner.py), as LoRA relies on too. A node of shard ``k`` of ``n``
keeps the other shards' parameters frozen at the shared starting point (the seeded tiny model
or the pretrained folder), so its contributions, validation, averaging, state sync and
checkpoints carry its slice only. Backpropagation still runs through the whole model: the
saving is in bytes on the wire and in optimizer memory, not in compute.

Why contiguous block ranges, with the embeddings on the first shard and the final norm and
head on the last: every parameter has exactly one owner, so the shards' checkpoints cover
the model exactly once and ``checkpoint reconstruct`` assembles them by name. A parameter
outside the blocks belongs to the first shard if it comes before the first block in the
model's own order (token and position embeddings; GPT-2's tied head is the embedding), else
to the last.

Why each shard is its own swarm on the wire (:func:`swarm_id`): nodes of different shards hold
disjoint parameters and have nothing to average. Giving each shard its own run id on the wire
and its own discovery key means they never find, admit or send contributions to each other:
no bytes wasted, and no peer punished for a "wrong" tensor set. The protocol itself is
unchanged inside each shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads with the model, not when settings check a shard
    import torch

__all__ = ["SHARD_KEY", "LayerShard", "LayerShardError", "apply_layer_shard", "owned", "swarm_id"]

SHARD_KEY = "layer_shard"  # key of a checkpoint's extra that holds LayerShard.record()

# ``transformer.h.3.attn...`` (GPT-2), ``model.layers.3.self_attn...`` (Llama, Qwen, Mistral),
# ``...blocks.3...`` / ``...layer.3...`` (others); with peft's ``base_model.model.`` prefix too.
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\.")


class LayerShardError(ValueError):
    """A layer shard that cannot apply (more shards than blocks, no blocks found, ...)."""


@dataclass(frozen=True, slots=True)
class LayerShard:
    index: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1:
            raise LayerShardError(f"model_shard_total must be >= 1, got {self.total}")
        if not 0 <= self.index < self.total:
            raise LayerShardError(
                f"model_shard_index must be in [0, {self.total - 1}], got {self.index}"
            )

    def blocks(self, n_blocks: int) -> range:
        """The contiguous blocks this shard owns (the first ``n % total`` shards get one more)."""
        if n_blocks < self.total:
            raise LayerShardError(
                f"{self.total} layer shards but the model has only {n_blocks} blocks"
            )
        base, extra = divmod(n_blocks, self.total)
        start = self.index * base + min(self.index, extra)
        return range(start, start + base + (1 if self.index < extra else 0))

    def record(self) -> dict[str, int]:
        return {"index": self.index, "total": self.total}

    @classmethod
    def from_record(cls, record: object) -> LayerShard:
        if not isinstance(record, dict):
            raise LayerShardError(f"bad {SHARD_KEY} record {record!r}")
        try:
            return cls(int(record["index"]), int(record["total"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LayerShardError(f"bad {SHARD_KEY} record {record!r}") from exc


def swarm_id(run_id: str, shard: LayerShard) -> str:
    """The run id a node uses on the wire and for discovery: one swarm per layer shard."""
    return run_id if shard.total == 1 else f"{run_id}/layers-{shard.index}-of-{shard.total}"


def _block_of(name: str) -> int | None:
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def owned(names: list[str], shard: LayerShard) -> set[str]:
    """Which of ``names`` (all the model's parameters, in model order) ``shard`` owns."""
    blocks = [b for b in map(_block_of, names) if b is not None]
    if not blocks:
        raise LayerShardError("no transformer blocks found in the model's parameter names")
    n_blocks = max(blocks) + 1
    mine = shard.blocks(n_blocks)
    first_block_at = next(i for i, n in enumerate(names) if _block_of(n) is not None)
    out = set()
    for i, name in enumerate(names):
        b = _block_of(name)
        if b is not None:
            if b in mine:
                out.add(name)
        elif (i < first_block_at and shard.index == 0) or (
            i > first_block_at and shard.index == shard.total - 1
        ):
            out.add(name)
    return out


def apply_layer_shard(model: torch.nn.Module, shard: LayerShard) -> torch.nn.Module:
    """Freeze every parameter ``shard`` does not own (a no-op for a single shard)."""
    if shard.total == 1:
        return model
    named: list[tuple[str, Any]] = list(model.named_parameters())
    mine = owned([n for n, _ in named], shard)
    for name, p in named:
        if name not in mine:
            p.requires_grad_(False)
    if not any(p.requires_grad for _, p in named):
        raise LayerShardError(f"layer shard {shard.index} of {shard.total} trains nothing")
    return model
