"""Send order of contributions (runtime/protocol/strategy.py): every receiver equally
often early and late, no receiver hit by every sender at once."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.protocol.strategy import FlatStrategy, GossipStrategy, ring_order

IDS = st.lists(st.text("0123456789abcdef", min_size=4, max_size=8), min_size=2, max_size=40)


@settings(max_examples=200, deadline=None)
@given(ids=IDS, round_number=st.integers(0, 10_000))
def test_each_step_of_the_walk_reaches_every_node_once(ids: list[str], round_number: int) -> None:
    everyone = sorted(set(ids))
    orders = {me: ring_order([p for p in everyone if p != me], me, round_number) for me in everyone}
    for me, order in orders.items():
        assert sorted(order) == [p for p in everyone if p != me]  # a permutation of the others
    # Step k of every sender's walk: all different receivers (no incast), so over the walk
    # each receiver is k-th for exactly one sender.
    for k in range(len(everyone) - 1):
        column = [order[k] for order in orders.values()]
        assert len(set(column)) == len(column)


def test_the_order_is_a_pure_function_and_rotates_between_rounds() -> None:
    peers = [f"p{i:02d}" for i in range(20) if i != 7]
    flat = FlatStrategy()
    rng = random.Random(1)
    first = flat.targets(peers, rng, "p07", 3)
    assert first == flat.targets(peers, random.Random(99), "p07", 3)  # no randomness used
    assert flat.targets(peers, rng, "p07", 0)[:2] == ("p08", "p09")  # the ring after itself
    lasts = {flat.targets(peers, rng, "p07", r)[-1] for r in range(40)}
    assert len(lasts) >= 10  # who is served last changes from round to round


def test_gossip_picks_a_seeded_subset_in_ring_order() -> None:
    peers = [f"p{i:03d}" for i in range(100)]
    gossip = GossipStrategy(fanout=4)
    a = gossip.targets(peers, random.Random(5), "p050", 2)
    assert a == gossip.targets(peers, random.Random(5), "p050", 2)
    assert len(set(a)) == 4 and set(a) <= set(peers)
    assert sorted(a) in [list(a[i:] + a[:i]) for i in range(4)]  # a rotation of sorted picks
    assert gossip.targets(peers[:3], random.Random(5), "p050", 2) == ring_order(
        peers[:3], "p050", 2
    )
