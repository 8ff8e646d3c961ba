"""Adversaries in the simulated world: who they are, where they sit, what they see.

The attacks themselves live in ``runtime/adversary`` (one vocabulary for the simulator and the
real adversarial node); this module only places them in the world:

* which nodes are adversarial (seeded, so a counterfactual run with the same seed picks the
  same nodes and keeps the same honest nodes and shards);
* who colludes: every omniscient behaviour (alie, ipm, min_max, min_sum, mimic) is one
  coalition per scenario entry; ``sybil: true`` makes any behaviour a Sybil group that shares
  one /24 (``group_size`` nodes per /24) and sends one identical update per round; otherwise
  each adversary acts alone;
* what they see: the driver hands every honest update of a round to the omniscient
  coalitions as soon as it is computed (``observe``) - the omniscient threat model of the
  ALIE/IPM papers, a stronger adversary than the real runtime's, which sees only what it
  receives.

Why rewrite at the wire and not inside the learner: an attacker controls what it sends, not
what the honest protocol would have computed. The adversarial node runs the same protocol and
keeps learning honestly (so it stays in step and keeps being heard); the driver swaps the
tensors of every ``Contribution`` it sends.
"""

from __future__ import annotations

import random

from swarm_tune.runtime.adversary.attacks import OMNISCIENT, AttackParams
from swarm_tune.runtime.adversary.coalition import Coalition
from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.sim.scenario import AdversarySpec


class Adversary:
    """One adversarial node: its scenario entry, its coalition and its address."""

    def __init__(
        self, spec: AdversarySpec, coalition: Coalition, address: str | None = None
    ) -> None:
        self.spec = spec
        self.behaviour = spec.behaviour
        self.coalition = coalition
        self.address = address  # sybils share a /24; others keep their honest-looking one
        self.crafted_sent = 0

    def rewrite(self, c: Contribution) -> Contribution:
        if c.round < self.spec.start_round:
            return c
        tensors = self.coalition.craft(c.round, c.kind, c.tensors)
        self.crafted_sent += 1
        return Contribution(c.round, c.kind, c.dataset_size, tensors)


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
            out[node] = Adversary(spec, coalition, address)
    return out


def sybil_address(spec: AdversarySpec, group_index: int, member: int) -> str:
    """All members of one group share the /24 of ``spec.subnet`` (shifted per group)."""
    a, b, c, _ = (int(x) for x in spec.subnet.split("."))
    c = (c + group_index) % 256
    return f"{a}.{b}.{c}.{1 + member % 254}"
