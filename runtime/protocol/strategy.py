"""Who a node sends its contribution to, in what order, and how many contributions to expect.

Why pluggable: flat all-to-all is what a 6-node swarm wants (everyone averages everything, so
replicas stay identical) but costs O(N^2) messages per round. Gossip with a bounded fan-out
costs O(N * fanout): each node pushes to ``fanout`` random peers of its view and averages what
it received, which is a randomised averaging (consensus) step; replicas differ slightly after
each round, and the protocol's periodic parameter rounds contract that drift.

Why the order matters: a sender's uplink carries one update after another, so the first
receiver gets it after one transfer time and the last after N-1 of them. If every sender
walked the same sorted list, every sender would hit the same receiver first (incast on its
downlink) and the same receivers last: those close their rounds last, start their next step
last, and their own updates then arrive after everyone else reached quorum - a few nodes'
work is thrown away as stale round after round (seen in churn-30: 16 of 107 honest nodes lost
more than half of their updates, most of them nearly all). So every sender walks the ring of
peer ids starting just after itself, rotated by a per-round offset that all senders share:
at each step of the walk every receiver gets exactly one update (no incast), every receiver
sits at every position equally often, and which pairs come last changes from round to round.
No randomness: it is a pure function of (peers, self, round), so it costs nothing and
reproduces exactly.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from swarm_tune.runtime.protocol.picks import pick

# Golden-ratio stride: successive rounds' rotations spread evenly over the ring.
_ROTATION_STRIDE = 0.6180339887498949


def ring_order(peers: Sequence[str], self_id: str, round_number: int) -> tuple[str, ...]:
    """``peers`` (sorted, without ``self_id``) in send order: the ring after ``self_id``,
    rotated by an offset that depends only on the round and the number of peers."""
    n = len(peers)
    if n <= 1:
        return tuple(peers)
    offset = int((round_number * _ROTATION_STRIDE) % 1.0 * n)
    start = (bisect_left(peers, self_id) + offset) % n
    return (*peers[start:], *peers[:start])


@dataclass(frozen=True, slots=True)
class FlatStrategy:
    def targets(
        self, live: Sequence[str], rng: random.Random, self_id: str, round_number: int
    ) -> tuple[str, ...]:
        return ring_order(live, self_id, round_number)

    def expected_contributions(self, live_count: int) -> int:
        return live_count + 1


@dataclass(frozen=True, slots=True)
class GossipStrategy:
    fanout: int

    def targets(
        self, live: Sequence[str], rng: random.Random, self_id: str, round_number: int
    ) -> tuple[str, ...]:
        chosen = live if len(live) <= self.fanout else sorted(pick(rng, live, self.fanout))
        return ring_order(chosen, self_id, round_number)

    def expected_contributions(self, live_count: int) -> int:
        return min(live_count, self.fanout) + 1


Strategy = FlatStrategy | GossipStrategy


def make_strategy(name: str, fanout: int) -> Strategy:
    if name == "flat":
        return FlatStrategy()
    if name == "gossip":
        return GossipStrategy(fanout)
    if name == "group":  # heartbeats and expectations as flat; the round itself: group.py
        return FlatStrategy()
    raise ValueError(f"unknown aggregation strategy {name!r}")
