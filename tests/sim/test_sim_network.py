"""Network model arithmetic: serialization, FIFO queueing, latency, loss, partitions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_tune.sim.distributions import Constant
from swarm_tune.sim.network import Network, graph_latency_s

MBIT = 1e6


def two_nodes(
    up: float, down: float, latency_s: float = 0.05, loss: float = 0.0, control_max: int = 65536
) -> Network:
    return Network(
        site_of=[0, 0, 0],
        latency_s=[[latency_s]],
        uplink_bps=[up, up, up],
        downlink_bps=[down, down, down],
        rng=random.Random(1),
        loss=loss,
        control_max_bytes=control_max,
    )


def test_250mb_on_20mbit_uplink_takes_100s_and_later_bulk_messages_queue() -> None:
    net = two_nodes(up=20 * MBIT, down=1000 * MBIT, latency_s=0.05)
    big = net.transmit(0, 1, 250_000_000, now=0.0)
    assert big.arrival == pytest.approx(100.0 + 0.05)
    assert net.uplink_free_at[0] == pytest.approx(100.0)
    # A second bulk message (1 MB) sent at t=1 waits behind the update on the same uplink.
    second = net.transmit(0, 2, 1_000_000, now=1.0)
    assert second.arrival is not None
    assert second.arrival == pytest.approx(100.0 + 1_000_000 * 8 / (20 * MBIT) + 0.05)


def test_control_messages_do_not_wait_behind_bulk_transfers() -> None:
    """A heartbeat during a 248 MB upload lands after latency + its own serialisation."""
    net = two_nodes(up=20 * MBIT, down=20 * MBIT, latency_s=0.05)
    big = net.transmit(0, 1, 248_000_000, now=0.0)
    assert big.arrival is not None and big.arrival > 99.0
    # Same uplink (0 -> 2) and same downlink (0 -> 1) as the bulk transfer: neither queues it.
    for now, dst in ((1.0, 2), (2.0, 1)):
        hb = net.transmit(0, dst, 300, now=now)
        assert hb.arrival == pytest.approx(now + 300 * 8 / (20 * MBIT) + 0.05)
    # The bulk lane is untouched by control traffic.
    assert net.uplink_free_at[0] == pytest.approx(248_000_000 * 8 / (20 * MBIT))
    # At the 64 KiB threshold a message is control; one byte above, it is bulk and queues.
    assert (net.transmit(0, 2, 65536, now=3.0).arrival or 0.0) < 10.0
    assert (net.transmit(0, 2, 65537, now=3.0).arrival or 0.0) > 99.0


def test_control_lane_is_fifo_among_control_messages() -> None:
    net = two_nodes(up=1 * MBIT, down=1000 * MBIT, latency_s=0.0)
    first = net.transmit(0, 1, 60_000, now=0.0)  # 0.48 s on a 1 Mbit/s uplink
    second = net.transmit(0, 2, 60_000, now=0.0)
    assert first.arrival == pytest.approx(0.48, rel=1e-3)
    assert second.arrival == pytest.approx(0.96, rel=1e-3)


def test_without_a_control_lane_everything_queues_fifo() -> None:
    net = two_nodes(up=20 * MBIT, down=1000 * MBIT, latency_s=0.05, control_max=0)
    net.transmit(0, 1, 250_000_000, now=0.0)
    small = net.transmit(0, 2, 300, now=1.0)
    assert small.arrival == pytest.approx(100.0 + 300 * 8 / (20 * MBIT) + 0.05)


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=10**8), min_size=1, max_size=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=20, max_size=20),
    up=st.floats(min_value=1e5, max_value=1e10),
)
def test_uplink_is_a_fifo_server(sizes: list[int], gaps: list[float], up: float) -> None:
    """Departures never overlap and never precede the send; total busy time = sum of sizes."""
    net = two_nodes(up=up, down=1e12, latency_s=0.0, control_max=0)
    now = 0.0
    prev_end = 0.0
    busy = 0.0
    for size, gap in zip(sizes, gaps, strict=False):
        now += gap
        start = max(now, net.uplink_free_at[0])
        net.transmit(0, 1, size, now)
        end = net.uplink_free_at[0]
        service = size * 8 / up
        assert start >= prev_end - 1e-9
        assert end == pytest.approx(start + service)
        busy += service
        prev_end = end
    assert prev_end >= busy - 1e-6


def test_loss_rate_is_respected_and_seeded() -> None:
    net = two_nodes(up=1e9, down=1e9, loss=0.2)
    dropped = sum(net.transmit(0, 1, 100, float(i)).arrival is None for i in range(5000))
    assert 850 < dropped < 1150
    again = two_nodes(up=1e9, down=1e9, loss=0.2)
    assert dropped == sum(again.transmit(0, 1, 100, float(i)).arrival is None for i in range(5000))


def test_partition_drops_across_groups_then_heals() -> None:
    net = two_nodes(up=1e9, down=1e9)
    net.partition([0, 0, 1])
    assert net.transmit(0, 1, 100, 0.0).arrival is not None
    cut = net.transmit(0, 2, 100, 0.0)
    assert cut.arrival is None and cut.reason == "partition"
    net.heal()
    assert net.transmit(0, 2, 100, 1.0).arrival is not None


def test_region_latency_and_jitter() -> None:
    net = Network(
        site_of=[0, 1],
        latency_s=[[0.01, 0.1], [0.1, 0.01]],
        uplink_bps=[1e12, 1e12],
        downlink_bps=[1e12, 1e12],
        rng=random.Random(3),
        jitter_ms=Constant(value=5.0),
    )
    d = net.transmit(0, 1, 1, 0.0)
    assert d.arrival == pytest.approx(0.105, abs=1e-6)


def test_graph_topology_shortest_paths() -> None:
    import networkx as nx

    g = nx.path_graph(4)
    lat, n = graph_latency_s(g, hop_latency_ms=10.0)
    assert n == 4
    assert lat[0][3] == pytest.approx(0.03)
    g2 = nx.Graph()
    g2.add_nodes_from([0, 1])
    lat2, _ = graph_latency_s(g2, 10.0)
    assert lat2[0][1] == float("inf")
