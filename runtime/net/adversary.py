"""Deliberately bad contributions, for demos and tests of robust aggregation ONLY.

Why it exists in the runtime at all: the docker-compose swarm and the local multi-process
tests need a real node process that misbehaves in realistic ways, so that norm bounds,
direction checks and bans are exercised end to end over the real wire. It is off unless
``SWARM_ADVERSARY`` names a mode, it only touches what the node *sends* (its own model and
its own averages stay honest, so the node keeps participating), and every use is logged.
Randomness is seeded, so a demo run is reproducible.
"""

from __future__ import annotations

from typing import Literal

import torch

from swarm_tune.runtime.protocol.tensors import TensorDict

AdversaryMode = Literal["none", "noise", "scale", "sign_flip", "nan"]
MODES: tuple[AdversaryMode, ...] = ("none", "noise", "scale", "sign_flip", "nan")


class Adversary:
    def __init__(self, mode: AdversaryMode, scale: float = 10.0, seed: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown adversary mode {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        self.scale = scale
        self._gen = torch.Generator().manual_seed(seed)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def corrupt(self, tensors: TensorDict) -> TensorDict:
        """A corrupted copy of ``tensors`` (the input is never modified)."""
        if self.mode == "none":
            return tensors
        out: TensorDict = {}
        for name, t in tensors.items():
            if not t.is_floating_point():
                out[name] = t
            elif self.mode == "noise":
                noise = torch.randn(t.shape, generator=self._gen, dtype=torch.float32)
                out[name] = t + (self.scale * noise).to(t.dtype)
            elif self.mode == "scale":
                out[name] = t * self.scale
            elif self.mode == "sign_flip":
                out[name] = -self.scale * t
            else:  # nan
                out[name] = torch.full_like(t, float("nan"))
        return out
