"""The real adversarial node: the shared attack library (runtime/adversary) on the real wire.

Why it exists in the runtime at all: the docker-compose swarm and the local multi-process
tests need a real node process that misbehaves in realistic ways, so that norm bounds, robust
rules and bans are exercised end to end over the real wire. It is off unless
``SWARM_ADVERSARY`` names a behaviour (the same names and meanings as a scenario's
``adversaries:`` block), it only touches what the node *sends* (its own model and its own
averages stay honest, so the node keeps participating; ``label_flip`` is the exception: the node
trains on flipped targets, set up by node_main through ``poison_labels``), and every use is
logged. An omniscient attacker holds its contribution until it has received every live peer's
for the round (at most half a round timeout: net/driver ``_await_view``), as a real ALIE/IPM
attacker would. Heartbeats and state responses go through ``rewrite`` too (``lying_heartbeat``,
``poisoned_sync``: runtime/adversary/claims.py). What it sees
is what a real attacker sees: the contributions it received for the round (``observe``) and its
own honest update - not the omniscient view the simulator grants. Randomness is seeded, so a
demo run is reproducible.
"""

from __future__ import annotations

from dataclasses import replace

from swarm_tune.runtime.adversary.attacks import BEHAVIOURS, AttackError, AttackParams
from swarm_tune.runtime.adversary.claims import claimed_size, rewrite_message
from swarm_tune.runtime.adversary.coalition import Coalition
from swarm_tune.runtime.protocol.messages import Contribution, Message
from swarm_tune.runtime.protocol.tensors import TensorDict, UpdateKind

MODES: tuple[str, ...] = ("none", *BEHAVIOURS)
SELF = "self"


class Adversary:
    def __init__(self, mode: str, strength: float | None = None, seed: int = 0) -> None:
        if mode not in MODES:
            raise AttackError(f"unknown adversary mode {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        self._coalition = (
            None if mode == "none" else Coalition(AttackParams(mode, strength), seed, 1, 1)  # type: ignore[arg-type]
        )

    @property
    def active(self) -> bool:
        return self._coalition is not None

    @property
    def params(self) -> AttackParams | None:
        return None if self._coalition is None else self._coalition.params

    def rewrite(self, msg: Message, swarm_size: int, sketch_size: int, sketch_seed: int) -> Message:
        """What the node sends instead of ``msg`` (``msg`` is never modified)."""
        if self._coalition is None:
            return msg
        if isinstance(msg, Contribution):
            tensors = self.corrupt(msg, swarm_size)
            size = claimed_size(self._coalition.params, msg.dataset_size)
            return replace(msg, tensors=tensors, dataset_size=size)
        return rewrite_message(self._coalition.params, msg, sketch_size, sketch_seed)

    @property
    def omniscient(self) -> bool:
        return self._coalition is not None and self._coalition.omniscient

    def seen(self, round_number: int, kind: UpdateKind) -> int:
        """Other peers' contributions of this round received so far."""
        return 0 if self._coalition is None else self._coalition.seen(round_number, kind)

    def observe(self, peer: str, c: Contribution) -> None:
        """A contribution received from ``peer``: what the omniscient attacks build on."""
        if self._coalition is not None:
            self._coalition.observe(c.round, c.kind, peer, c.tensors)

    def corrupt(self, c: Contribution, swarm_size: int) -> TensorDict:
        """The crafted tensors to send instead of ``c``'s (``c`` is never modified)."""
        return self.craft_update(c.round, c.kind, c.tensors, swarm_size)

    def craft_update(
        self, rnd: int, kind: UpdateKind, update: TensorDict, swarm_size: int
    ) -> TensorDict:
        """The update to contribute instead of ``update``. A group round slices the update
        inside the core, so the driver crafts it before (its pieces are the contribution);
        a flat round crafts its Contribution at send."""
        if self._coalition is None:
            return update
        self._coalition.n = max(swarm_size, 1)  # ALIE's z depends on who is in the swarm
        self._coalition.observe(rnd, kind, SELF, update, own=True)
        return self._coalition.craft(rnd, kind, update)
