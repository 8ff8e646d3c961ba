"""Compressing a model update (named tensors) through a codec, for both drivers.

Why here and not in the protocol core: the residual of error feedback is a node's private
learner-side state (it must survive a rejoin and go into checkpoints, like optimizer moments),
while the core only ever needs the *decoded* update. So the sender's driver compresses right
after the learner produced an update and hands the core both: the decoded tensors (what the
node itself averages, bit-identical to what every receiver decodes) and the ``Encoded`` form
(what the wire carries, and what the simulator charges). A receiver's core decodes with
``decode_update`` against its own model spec, so a size that disagrees with the model is
refused before anything is allocated or applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from swarm_tune.runtime.compression.codecs import CompressionError, Encoded, parse_codec
from swarm_tune.runtime.compression.feedback import ErrorFeedback

if TYPE_CHECKING:  # the core imports this module: a runtime import back would be a cycle
    from swarm_tune.runtime.protocol.tensors import ModelSpec, TensorDict

__all__ = ["UpdateCompressor", "decode_update"]


class UpdateCompressor:
    """A node's codec + error-feedback residual over its model's flattened updates."""

    __slots__ = ("feedback", "spec")

    def __init__(self, codec: str, spec: ModelSpec) -> None:
        self.spec = spec
        self.feedback = ErrorFeedback(parse_codec(codec))

    @property
    def lossless(self) -> bool:
        return self.feedback.codec.lossless

    def compress(self, update: TensorDict) -> tuple[TensorDict, Encoded]:
        """(decoded tensors in the spec's shapes, the encoded form for the wire)."""
        enc, decoded = self.feedback.compress(self.spec.flatten(update))
        return self.spec.unflatten(decoded), enc


def decode_update(spec: ModelSpec, enc: Encoded) -> TensorDict:
    """The named tensors ``enc`` stands for under ``spec``; ``CompressionError`` if it cannot.

    The header's size is checked against the model before decoding: a peer cannot make us
    allocate a vector the model does not have."""
    if enc.numel != spec.numel:
        raise CompressionError(f"header says {enc.numel} values, the model has {spec.numel}")
    flat = parse_codec(enc.codec).decode(enc)
    return spec.unflatten(flat.to(torch.float32))
