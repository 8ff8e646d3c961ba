"""A colluding group of attackers: what they have seen this round, and the one update they send.

Why a coalition object shared by its members: colluders pool their knowledge (every honest
update any of them saw, plus their own honest updates) and send the SAME crafted update, so
the group is as strong as the attack papers assume and looks like a Sybil group to the
defences. A lone attacker (the real runtime's adversarial node) is a coalition of one.

Updates are handled as flat float32 vectors in the spec order of the attacker's own update
(``ModelSpec``); only the current rounds are kept, so memory stays flat over long runs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from swarm_tune.runtime.adversary.attacks import (
    OMNISCIENT,
    AttackParams,
    craft_from_own,
    craft_from_view,
)
from swarm_tune.runtime.protocol.tensors import ModelSpec, TensorDict, UpdateKind

F32 = npt.NDArray[np.float32]
ROUNDS_KEPT = 3  # rounds of views kept (peers are never more than a couple of rounds apart)


class Coalition:
    def __init__(self, params: AttackParams, seed: int, n: int, f: int) -> None:
        self.params = params
        self.n = n  # swarm size and coalition size: ALIE's z
        self.f = f
        self._rng = np.random.Generator(np.random.PCG64(seed))
        # (round, kind) -> peer -> (flat update, is it a member's own honest update)
        self._views: dict[tuple[int, UpdateKind], dict[str, tuple[F32, bool]]] = {}
        self._crafted: dict[tuple[int, UpdateKind], F32] = {}
        self._first: dict[UpdateKind, F32] = {}

    @property
    def omniscient(self) -> bool:
        return self.params.behaviour in OMNISCIENT

    def observe(
        self, round_number: int, kind: UpdateKind, peer: str, update: TensorDict, own: bool = False
    ) -> None:
        """An honest update this coalition saw (``own``: a member computed it) for a round."""
        if not self.omniscient:
            return
        flat = ModelSpec.from_tensors(update).flatten(update).numpy()
        if not np.all(np.isfinite(flat)):
            return  # someone else's garbage would only blunt the attack
        key = (round_number, kind)
        self._views.setdefault(key, {})[peer] = (flat, own)
        if len(self._views) > ROUNDS_KEPT:
            self._views.pop(min(self._views))

    def seen(self, round_number: int, kind: UpdateKind) -> int:
        """How many other peers' honest updates of this round the coalition holds."""
        return sum(not own for _, own in self._views.get((round_number, kind), {}).values())

    def craft(self, round_number: int, kind: UpdateKind, own: TensorDict) -> TensorDict:
        """The coalition's update for this round (identical for every member)."""
        key = (round_number, kind)
        spec = ModelSpec.from_tensors(own)
        out = self._crafted.get(key)
        if out is None:
            own_flat = spec.flatten(own).numpy()
            if self.omniscient:
                view = self._views.get(key, {})
                others = [view[p][0] for p in sorted(view) if not view[p][1]]
                ours = [view[p][0] for p in sorted(view) if view[p][1]]
                # mimic copies someone else; the statistics use everything honest we know
                pool = others if self.params.behaviour == "mimic" else others + ours
                honest = pool or ours or [own_flat]
                out = craft_from_view(self.params, honest, self.n, self.f)
            else:
                out = craft_from_own(self.params, own_flat, self._first.get(kind), self._rng)
                self._first.setdefault(kind, own_flat.copy())
            self._crafted = {key: out}  # only the current round matters
        return spec.unflatten(torch.from_numpy(out.copy()))
