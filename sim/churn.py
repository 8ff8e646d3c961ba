"""Churn and heterogeneity: who is online when, how they leave, how fast they compute.

Why per-node generators derived from the scenario seed: a node's whole life (its sessions,
its GPU class, whether it is a straggler) must not depend on what *other* nodes did, or a
one-node change to a scenario would reshuffle the entire world and make A/B comparisons
noise. Each node gets ``random.Random(f"{seed}:{purpose}:{node}")`` (string seeds hash with
SHA-512 in CPython: stable across runs and platforms).

Session model: a churning node alternates online sessions and offline gaps drawn from the
scenario's distributions (exponential, lognormal, Weibull — measured P2P session lengths are
heavy-tailed). Each leave is a crash (silent: peers find out by eviction timeout) or graceful
(``ProtocolNode.stop`` -> Goodbye) with ``crash_probability``. A node that comes back is a
restart from its checkpoint: same identity, same parameters, its last round, then catch-up.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from swarm_tune.sim.scenario import ChurnSpec, ComputeSpec


def node_rng(seed: int, purpose: str, node: int) -> random.Random:
    return random.Random(f"{seed}:{purpose}:{node}")


def weighted_pick(weights: Sequence[float], rng: random.Random) -> int:
    total = sum(weights)
    x = rng.random() * total
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if x < acc:
            return i
    return len(weights) - 1


@dataclass(frozen=True, slots=True)
class NodeProfile:
    compute_class: int
    straggler: bool


class ComputeModel:
    """Per-node compute-time distribution: a GPU class, possibly slowed as a straggler."""

    def __init__(self, spec: ComputeSpec, total_nodes: int, seed: int) -> None:
        self.spec = spec
        weights = [c.weight for c in spec.classes]
        self.profiles: list[NodeProfile] = []
        for i in range(total_nodes):
            rng = node_rng(seed, "profile", i)
            cls = weighted_pick(weights, rng)
            self.profiles.append(NodeProfile(cls, rng.random() < spec.stragglers.fraction))

    def step_time(self, node: int, rng: random.Random) -> float:
        prof = self.profiles[node]
        t = self.spec.classes[prof.compute_class].step_time.sample(rng)
        return t * self.spec.stragglers.factor if prof.straggler else t

    def message_s_per_mb(self, node: int) -> float:
        return self.spec.classes[self.profiles[node].compute_class].message_s_per_mb

    def transport_bps(self, node: int) -> float:
        """Bulk bits per second the node's transport CPU can carry, in and out together
        (``inf``: the CPU is free)."""
        cls = self.spec.classes[self.profiles[node].compute_class]
        if not cls.transport_s_per_mb:
            return math.inf
        return 8e6 * cls.cores / cls.transport_s_per_mb

    def shared_machines(self) -> list[tuple[list[int], float]]:
        """(nodes, one core's transport rate in bit/s) per compute class whose nodes share
        one machine's cores (``shared_cores``, sim/links.py)."""
        out = []
        for k, cls in enumerate(self.spec.classes):
            members = [i for i, p in enumerate(self.profiles) if p.compute_class == k]
            if cls.shared_cores and cls.transport_s_per_mb and members:
                out.append((members, 8e6 / cls.transport_s_per_mb))
        return out

    def class_name(self, node: int) -> str:
        return self.spec.classes[self.profiles[node].compute_class].name


class ChurnModel:
    """Which nodes churn, and the random draws of their sessions."""

    def __init__(
        self, spec: ChurnSpec, initial_nodes: int, exempt: Sequence[int], seed: int
    ) -> None:
        self.spec = spec
        self.seed = seed
        exempt_set = frozenset(exempt)
        candidates = [i for i in range(initial_nodes) if i not in exempt_set]
        k = min(len(candidates), round(spec.fraction * initial_nodes))
        picker = random.Random(f"{seed}:churners")
        self.churners: tuple[int, ...] = tuple(sorted(picker.sample(candidates, k)))
        self._rngs: dict[int, random.Random] = {}

    def rng(self, node: int) -> random.Random:
        r = self._rngs.get(node)
        if r is None:
            r = self._rngs[node] = node_rng(self.seed, "churn", node)
        return r

    def first_session(self, node: int) -> float:
        # Stationary start: the first session is a uniformly random tail of a session, so
        # churners do not all leave in one burst at t = session length — unless the scenario
        # gives the first session its own distribution.
        rng = self.rng(node)
        first = self.spec.first_session
        if first is not None:
            return self.spec.first_leave_after + max(0.0, first.sample(rng))
        return self.spec.first_leave_after + rng.random() * self.spec.session.sample(rng)

    def session(self, node: int) -> float:
        return max(1e-3, self.spec.session.sample(self.rng(node)))

    def offline(self, node: int) -> float:
        return max(1e-3, self.spec.offline.sample(self.rng(node)))

    def crashes(self, node: int) -> bool:
        return self.rng(node).random() < self.spec.crash_probability

    def joiner_times(self, first_index: int) -> list[tuple[float, int]]:
        """(time, node index) of nodes that are not there at t=0 and join later."""
        out = []
        for j in range(self.spec.joiners.count):
            node = first_index + j
            out.append((self.spec.joiners.at.sample(node_rng(self.seed, "join", node)), node))
        return sorted(out)
