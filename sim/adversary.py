"""Adversaries: pluggable rewrites of a node's *outgoing* contributions.

Why rewrite at the wire and not inside the learner: an attacker controls what it sends, not
what the honest protocol would have computed. The adversarial node runs the same protocol
and keeps learning honestly (so it stays in step and keeps being heard); the driver swaps the
tensors of every ``Contribution`` it sends. That tests exactly the defences a real swarm has
(structure checks, norm bound, direction check, replay memory, subnet cap, reputation).

Behaviours (``factor`` defaults in brackets):

* ``nan`` / ``inf``   — every entry NaN / +inf (caught on arrival: non_finite).
* ``scaled``          — x factor [100] (norm outlier).
* ``sign_flip``       — x -factor [1] (points against the median: hostile_direction).
* ``noise``           — u + N(0, (std x RMS(u))^2) per entry, seeded.
* ``stale_replay``    — re-sends the first update it ever sent of that kind (replay).
* ``sybil``           — a group sharing one /24 sends one identical crafted update per round:
  -factor [1] x the first member's honest update. The subnet cap bounds their joint weight.
"""

from __future__ import annotations

import math

import torch

from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.tensors import TensorDict, UpdateKind, rms_norm
from swarm_tune.sim.scenario import AdversarySpec

_DEFAULT_FACTOR = {"scaled": 100.0, "sign_flip": 1.0, "sybil": 1.0}


class SybilGroup:
    """The shared crafted update of one sybil group, per (round, kind)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._crafted: dict[tuple[int, UpdateKind], TensorDict] = {}

    def crafted(self, round_number: int, kind: UpdateKind, honest: TensorDict) -> TensorDict:
        key = (round_number, kind)
        out = self._crafted.get(key)
        if out is None:
            out = {n: t * (-self.factor) for n, t in honest.items()}
            # Only the current round matters; keep memory flat over long runs.
            self._crafted = {key: out}
        return out


class Adversary:
    """One adversarial node's behaviour."""

    def __init__(
        self,
        spec: AdversarySpec,
        seed: int,
        group: SybilGroup | None = None,
        address: str | None = None,
    ) -> None:
        self.spec = spec
        self.address = address  # sybils share a /24; others keep their honest-looking one
        self.behaviour = spec.behaviour
        f = spec.factor if spec.factor is not None else _DEFAULT_FACTOR.get(spec.behaviour, 1.0)
        self.factor = f
        self.group = group
        self._gen = torch.Generator().manual_seed(seed)
        self._first: dict[UpdateKind, TensorDict] = {}
        self.crafted_sent = 0

    def rewrite(self, c: Contribution) -> Contribution:
        if c.round < self.spec.start_round:
            return c
        tensors = self._craft(c.round, c.kind, c.tensors)
        if tensors is c.tensors:
            return c
        self.crafted_sent += 1
        return Contribution(c.round, c.kind, c.dataset_size, tensors)

    def _craft(self, rnd: int, kind: UpdateKind, u: TensorDict) -> TensorDict:
        b = self.behaviour
        if b == "nan":
            return {n: torch.full_like(t, math.nan) for n, t in u.items()}
        if b == "inf":
            return {n: torch.full_like(t, math.inf) for n, t in u.items()}
        if b == "scaled":
            return {n: t * self.factor for n, t in u.items()}
        if b == "sign_flip":
            return {n: t * (-self.factor) for n, t in u.items()}
        if b == "noise":
            sigma = self.spec.std * rms_norm(u)
            return {
                n: t + sigma * torch.randn(t.shape, generator=self._gen, dtype=t.dtype)
                for n, t in u.items()
            }
        if b == "stale_replay":
            first = self._first.get(kind)
            if first is None:
                self._first[kind] = u
                return u  # the first one is genuine; every later one is a replay of it
            return first
        if b == "sybil":
            assert self.group is not None
            return self.group.crafted(rnd, kind, u)
        raise ValueError(f"unknown behaviour {b!r}")


def assign_adversaries(
    specs: list[AdversarySpec], candidates: list[int], seed: int
) -> dict[int, Adversary]:
    """Pick adversarial node indices (seeded) and build their behaviours."""
    import random

    rng = random.Random(f"{seed}:adversaries")
    pool = list(candidates)
    rng.shuffle(pool)
    out: dict[int, Adversary] = {}
    cursor = 0
    for spec in specs:
        k = spec.resolved_count(len(candidates))
        chosen = sorted(pool[cursor : cursor + k])
        cursor += k
        size = spec.group_size or max(1, k)
        groups: list[SybilGroup] = []
        for j, node in enumerate(chosen):
            group = None
            address = None
            if spec.behaviour == "sybil":
                if j % size == 0:
                    f = spec.factor if spec.factor is not None else 1.0
                    groups.append(SybilGroup(f))
                group = groups[-1]
                address = sybil_address(spec, len(groups) - 1, j % size)
            out[node] = Adversary(spec, seed * 1_000_003 + node, group, address)
    return out


def sybil_address(spec: AdversarySpec, group_index: int, member: int) -> str:
    """All members of one group share the /24 of ``spec.subnet`` (shifted per group)."""
    a, b, c, _ = (int(x) for x in spec.subnet.split("."))
    c = (c + group_index) % 256
    return f"{a}.{b}.{c}.{1 + member % 254}"
