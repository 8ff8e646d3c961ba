"""Adversaries in the simulated world: who they are, where they sit, what they see.

The attacks themselves live in ``runtime/adversary`` (one vocabulary for the simulator and the
real adversarial node); this module only places them in the world:

* which nodes are adversarial (seeded, so a counterfactual run with the same seed picks the
  same nodes and keeps the same honest nodes and shards);
* who colludes: every omniscient behaviour (alie, ipm, min_max, min_sum, mimic) is one
  coalition per scenario entry; ``sybil: true`` makes any behaviour a Sybil group that shares
  one /24 (``group_size`` nodes per /24) and sends one identical update per round; otherwise
  each adversary acts alone; ``jitter`` adds per-member Gaussian noise (x the update's RMS;
  ``true`` = 1e-3), so that colluders are not bit-identical (against duplicate collapsing,
  runtime/aggregation/rules.py; larger values model an adaptive attacker that makes its
  copies look like independent updates);
* what they see: the driver hands every honest update of a round to the omniscient
  coalitions as soon as it is computed (``observe``) - the omniscient threat model of the
  ALIE/IPM papers, a stronger adversary than the real runtime's, which sees only what it
  receives.

Why rewrite at the wire and not inside the learner: an attacker controls what it sends, not
what the honest protocol would have computed. The adversarial node runs the same protocol and
keeps learning honestly (so it stays in step and keeps being heard); the driver passes every
message it sends through ``rewrite`` (contributions: the coalition's update; heartbeats and
state responses: ``runtime/adversary/claims.py``). The one attack that is not at the wire is
``label_flip``: the driver marks the node's data as poisoned in the learner
(``poison_labels``), which then trains it on flipped targets.
"""

from __future__ import annotations

import random

import torch

from swarm_tune.runtime.adversary.attacks import OMNISCIENT, AttackParams
from swarm_tune.runtime.adversary.claims import claimed_size, rewrite_message
from swarm_tune.runtime.adversary.coalition import Coalition
from swarm_tune.runtime.protocol.messages import Contribution, Message
from swarm_tune.runtime.protocol.tensors import TensorDict, UpdateKind
from swarm_tune.sim.scenario import AdversarySpec


class Adversary:
    """One adversarial node: its scenario entry, its coalition and its address."""

    def __init__(
        self, spec: AdversarySpec, coalition: Coalition, address: str | None = None, seed: int = 0
    ) -> None:
        self.spec = spec
        self.behaviour = spec.behaviour
        self.coalition = coalition
        self.address = address  # sybils share a /24; others keep their honest-looking one
        self.crafted_sent = 0
        self._started = spec.start_round <= 0  # other messages lie from its first contribution
        self._jitter = torch.Generator().manual_seed(seed)

    def rewrite(self, msg: Message, sketch_size: int, sketch_seed: int) -> Message:
        """What this node sends instead of ``msg`` (from ``spec.start_round`` on)."""
        if not isinstance(msg, Contribution):
            if self._started:
                return rewrite_message(self.coalition.params, msg, sketch_size, sketch_seed)
            return msg
        if msg.round < self.spec.start_round:
            return msg
        tensors = self.craft_update(msg.round, msg.kind, msg.tensors)
        size = claimed_size(self.coalition.params, msg.dataset_size)
        return Contribution(msg.round, msg.kind, size, tensors)

    def craft_update(self, rnd: int, kind: UpdateKind, update: TensorDict) -> TensorDict:
        """The update this node contributes to round ``rnd`` instead of ``update``. A flat
        round crafts its Contribution at send; a group round crafts the update itself
        before the core slices it (its pieces are what it contributes, and every owner must
        see slices of one crafted update)."""
        if rnd < self.spec.start_round:
            return update
        self._started = True
        tensors = self.coalition.craft(rnd, kind, update)
        if self.spec.jitter > 0:
            tensors = jittered(tensors, self._jitter, self.spec.jitter)
        self.crafted_sent += 1
        return tensors


def jittered(tensors: TensorDict, gen: torch.Generator, scale: float) -> TensorDict:
    """The coalition's update plus per-member Gaussian noise of ``scale`` x its RMS, so
    colluders are no longer bit-identical (what an attacker does against duplicate
    collapsing)."""
    out = {}
    for name, t in tensors.items():
        rms = float(t.double().pow(2).mean().sqrt()) if t.numel() else 0.0
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float32) * (scale * rms)
        out[name] = t + noise.to(t.dtype)
    return out


def assign_adversaries(
    specs: list[AdversarySpec], candidates: list[int], seed: int
) -> dict[int, Adversary]:
    """Pick adversarial node indices (seeded) and build their coalitions."""
    rng = random.Random(f"{seed}:adversaries")
    pool = list(candidates)
    rng.shuffle(pool)
    n = len(candidates)
    out: dict[int, Adversary] = {}
    cursor = 0
    for e, spec in enumerate(specs):
        k = spec.resolved_count(n)
        chosen = sorted(pool[cursor : cursor + k])
        cursor += k
        params = AttackParams(spec.behaviour, spec.strength)
        size = (spec.group_size or max(1, k)) if spec.sybil else 1
        shared = spec.behaviour in OMNISCIENT and not spec.sybil
        coalition: Coalition | None = None
        for j, node in enumerate(chosen):
            if coalition is None or (not shared and j % size == 0):
                coalition = Coalition(params, seed * 1_000_003 + e * 7919 + node, n, k)
            address = sybil_address(spec, j // size, j % size) if spec.sybil else None
            out[node] = Adversary(spec, coalition, address, seed * 1_000_003 + node)
    return out


def sybil_address(spec: AdversarySpec, group_index: int, member: int) -> str:
    """All members of one group share the /24 of ``spec.subnet`` (shifted per group)."""
    a, b, c, _ = (int(x) for x in spec.subnet.split("."))
    c = (c + group_index) % 256
    return f"{a}.{b}.{c}.{1 + member % 254}"
