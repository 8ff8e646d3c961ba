"""Who a node sends its contribution to, and how many contributions it should expect.

Why pluggable: flat all-to-all is what a 6-node swarm wants (everyone averages everything, so
replicas stay identical) but costs O(N^2) messages per round. Gossip with a bounded fan-out
costs O(N * fanout): each node pushes to ``fanout`` random peers of its view and averages what
it received, which is a randomised averaging (consensus) step; replicas differ slightly after
each round, and the protocol's periodic parameter rounds contract that drift.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from swarm_tune.runtime.aggregation.picks import pick


@dataclass(frozen=True, slots=True)
class FlatStrategy:
    def targets(self, live: Sequence[str], rng: random.Random) -> tuple[str, ...]:
        return tuple(live)

    def expected_contributions(self, live_count: int) -> int:
        return live_count + 1


@dataclass(frozen=True, slots=True)
class GossipStrategy:
    fanout: int

    def targets(self, live: Sequence[str], rng: random.Random) -> tuple[str, ...]:
        if len(live) <= self.fanout:
            return tuple(live)
        return tuple(sorted(pick(rng, live, self.fanout)))

    def expected_contributions(self, live_count: int) -> int:
        return min(live_count, self.fanout) + 1


Strategy = FlatStrategy | GossipStrategy


def make_strategy(name: str, fanout: int) -> Strategy:
    if name == "flat":
        return FlatStrategy()
    if name == "gossip":
        return GossipStrategy(fanout)
    raise ValueError(f"unknown aggregation strategy {name!r}")
