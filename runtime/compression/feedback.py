"""Error feedback: what a lossy codec dropped this round is added to the next round's input.

Why: top-k at 1% sends 1% of a vector; without memory, the other 99% of every update is lost
for good and training stalls. With a per-node residual ``r``, the node sends
``C(u + r)`` and keeps ``r' = (u + r) - D(C(u + r))``, so over any number of rounds
``sum(sent) + r == sum(inputs)`` (up to float32 rounding): nothing is lost, only delayed.

The residual is a node's private state: it belongs in its checkpoints and survives a
rejoin (a node that forgot it would silently drop what it owed the swarm). ``state`` /
``load_state`` are that hand-over. Lossless codecs keep no residual (it would stay zero).
"""

from __future__ import annotations

import torch

from swarm_tune.runtime.compression.codecs import Codec, CompressionError, Encoded

__all__ = ["ErrorFeedback"]


class ErrorFeedback:
    """One node's residual for one codec (see module doc)."""

    __slots__ = ("_residual", "codec")

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._residual: torch.Tensor | None = None

    @property
    def residual(self) -> torch.Tensor | None:
        """The carried-over error (float32, flat), or None before the first lossy round."""
        return self._residual

    def compress(self, flat: torch.Tensor) -> tuple[Encoded, torch.Tensor]:
        """Encode ``flat`` plus the residual; return (what goes on the wire, its decoding)."""
        x = flat.detach().to("cpu", torch.float32)
        if self.codec.lossless:
            enc = self.codec.encode(x)
            return enc, self.codec.decode(enc)
        r = self._residual
        if r is not None:
            if r.numel() != x.numel():
                raise CompressionError(f"residual has {r.numel()} values, update {x.numel()}")
            x = x + r
        enc = self.codec.encode(x)
        decoded = self.codec.decode(enc)
        self._residual = x - decoded
        return enc, decoded

    def state(self) -> torch.Tensor | None:
        """A copy of the residual, for checkpoints and rejoin."""
        return None if self._residual is None else self._residual.clone()

    def load_state(self, residual: torch.Tensor | None) -> None:
        if residual is not None and (residual.dim() != 1 or not residual.is_floating_point()):
            raise CompressionError("a residual is one flat floating-point vector")
        self._residual = None if residual is None else residual.detach().to(torch.float32).clone()
