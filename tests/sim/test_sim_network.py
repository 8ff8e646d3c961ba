"""Network model: fair sharing of uplinks and downlinks against closed forms, the control lane,
cancellation, latency, loss and partitions."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.sim.distributions import Constant
from swarm_tune.sim.network import Network, graph_latency_s

MBIT = 1_000_000
MB = 1_000_000


@dataclass
class World:
    """A Network in its own SimPy environment that records when each message lands."""

    env: simpy.Environment
    net: Network = field(init=False)
    landed: dict[str, float] = field(default_factory=dict)

    def on_arrival(self, ev: simpy.Event) -> None:
        self.landed[str(ev.value)] = self.env.now

    def send_at(
        self, t: float, burst: list[tuple[int, int, int, str]], key: int | None = None
    ) -> None:
        """At virtual time t, send (src, dst, bytes, name) messages as one burst."""

        def go(_: simpy.Event) -> None:
            for src, dst, size, name in burst:
                self.net.send(src, dst, size, name, key)
            self.net.commit()

        simpy.Timeout(self.env, t).callbacks.append(go)

    def at(self, t: float, fn: object) -> None:
        simpy.Timeout(self.env, t).callbacks.append(lambda _: fn())  # type: ignore[operator]


def world(
    up: list[float],
    down: list[float],
    latency_s: float = 0.0,
    loss: float = 0.0,
    control_max: int = 65536,
    seed: int = 1,
    cpu: list[float] | None = None,
    lead: int | None = None,
    machines: list[tuple[list[int], float]] | None = None,
) -> World:
    w = World(simpy.Environment())
    w.net = Network(
        w.env,
        site_of=[0] * len(up),
        latency_s=[[latency_s]],
        uplink_bps=up,
        downlink_bps=down,
        rng=random.Random(seed),
        deliver=w.on_arrival,
        loss=loss,
        control_max_bytes=control_max,
        cpu_bps=cpu,
        lead_seed=None if lead is None else str(lead),
        cpu_shared=machines or (),
    )
    return w


def test_two_flows_from_one_sender_share_its_uplink() -> None:
    # 2 x 250 MB on a 20 Mbit/s uplink: processor sharing, both land at 2 x 100 s.
    w = world([20 * MBIT] * 3, [1000 * MBIT] * 3, latency_s=0.05)
    w.send_at(0.0, [(0, 1, 250 * MB, "a"), (0, 2, 250 * MB, "b")])
    w.env.run()
    assert w.landed["a"] == pytest.approx(200.05)
    assert w.landed["b"] == pytest.approx(200.05)


def test_two_flows_into_one_downlink_share_it() -> None:
    # Fast senders, a 10 Mbit/s downlink: each gets 5 Mbit/s; 10 MB -> 16 s each.
    w = world([100 * MBIT, 100 * MBIT, 100 * MBIT], [100 * MBIT, 100 * MBIT, 10 * MBIT])
    w.send_at(0.0, [(0, 2, 10 * MB, "a")])
    w.send_at(0.0, [(1, 2, 10 * MB, "b")])
    w.env.run()
    assert w.landed["a"] == pytest.approx(16.0)
    assert w.landed["b"] == pytest.approx(16.0)


def test_staggered_flows_processor_sharing_closed_form() -> None:
    # One 20 Mbit/s uplink: 100 Mbit from t=0, 20 Mbit from t=1. Alone for 1 s (20 Mbit
    # done), then shared at 10 Mbit/s each: the small one needs 2 s (t=3), then the big one
    # has 100 - 20 - 20 = 60 Mbit left alone: 3 s (t=6).
    w = world([20 * MBIT] * 3, [1000 * MBIT] * 3)
    w.send_at(0.0, [(0, 1, 100 * MBIT // 8, "big")])
    w.send_at(1.0, [(0, 2, 20 * MBIT // 8, "small")])
    w.env.run()
    assert w.landed["small"] == pytest.approx(3.0)
    assert w.landed["big"] == pytest.approx(6.0)


def test_slow_sender_does_not_block_a_fast_one_to_the_same_receiver() -> None:
    """The issue's case: 250 MB from a 1 Mbit/s uplink (2,000 s), then 1 s later a 1 MB
    message from a fast node to the same receiver. It lands after 1 + 8 Mbit / 99 Mbit/s
    (max-min: the trickle keeps 1 Mbit/s of the 100 Mbit/s downlink), not at 2,002 s."""
    w = world([1 * MBIT, 100 * MBIT, 100 * MBIT], [100 * MBIT] * 3, latency_s=0.02)
    w.send_at(0.0, [(0, 2, 250 * MB, "slow")])
    w.send_at(1.0, [(1, 2, 1 * MB, "fast")])
    w.env.run()
    assert w.landed["fast"] == pytest.approx(1.0 + 8.0 / 99.0 + 0.02)
    assert w.landed["slow"] == pytest.approx(2000.0 + 0.02)


def test_a_flow_that_becomes_uplink_limited_is_held_to_what_it_received() -> None:
    # A 10 Mbit/s downlink. t=0: A (80 Mbit, sender 8 Mbit/s) and B (20 Mbit, fast) share it
    # 5/5; B lands at t=4, when A has received 20 Mbit (its sender could push no more). Alone,
    # A runs at its sender's 8 Mbit/s. At t=5 (52 Mbit left) C (20 Mbit, fast) arrives: 5/5
    # again, C lands at t=9; A has 32 Mbit left at 8 Mbit/s: t=13.
    w = world([8 * MBIT, 100 * MBIT, 100 * MBIT, 1e9], [1e9, 1e9, 1e9, 10 * MBIT])
    w.send_at(0.0, [(0, 3, 80 * MBIT // 8, "A")])
    w.send_at(0.0, [(1, 3, 20 * MBIT // 8, "B")])
    w.send_at(5.0, [(2, 3, 20 * MBIT // 8, "C")])
    w.env.run()
    assert w.landed["B"] == pytest.approx(4.0)
    assert w.landed["C"] == pytest.approx(9.0)
    assert w.landed["A"] == pytest.approx(13.0)


def test_a_slow_flow_does_not_delay_a_fast_one_on_other_links() -> None:
    w = world([1 * MBIT, 100 * MBIT, 100 * MBIT, 100 * MBIT], [100 * MBIT] * 4)
    w.send_at(0.0, [(0, 1, 250 * MB, "slow")])
    w.send_at(0.5, [(2, 3, 10 * MB, "fast")])
    w.env.run()
    assert w.landed["fast"] == pytest.approx(0.5 + 0.8)


def test_transport_cpu_serves_a_nodes_flows_both_ways() -> None:
    # Fast links (0.008 s for 1 MB), CPUs of 40 Mbit/s at nodes 0 and 1, node 2's free: a
    # CPU serves every flow its node sends or receives.
    inf = math.inf
    w = world([1000 * MBIT] * 3, [1000 * MBIT] * 3, latency_s=0.01, cpu=[40 * MBIT] * 2 + [inf])
    w.send_at(0.0, [(0, 1, 1 * MB, "a")])
    w.send_at(0.0, [(1, 0, 1 * MB, "b")])
    w.send_at(0.0, [(2, 0, 1 * MB, "c")])  # a free-CPU sender still shares 0's CPU
    w.env.run()
    # 0's CPU serves a, b and c at 40 / 3 Mbit/s each: all three are through it at 0.6 s
    # (1's CPU, a and b at 20 Mbit/s, was done at 0.4 s).
    assert w.landed["c"] == pytest.approx(0.6 + 0.01)
    assert w.landed["a"] == pytest.approx(0.6 + 0.01)
    assert w.landed["b"] == pytest.approx(0.6 + 0.01)


def test_a_cancelled_flow_frees_the_transport_cpu() -> None:
    # Node 0's CPU carries 8 Mbit/s; 1 MB to each of 1 and 2 (4 Mbit/s each). Node 2 leaves at
    # t = 0.5 (2 Mbit sent): the other has the CPU alone for its last 6 Mbit, landing at 1.25.
    inf = math.inf
    w = world([100 * MBIT] * 3, [100 * MBIT] * 3, cpu=[8 * MBIT, inf, inf])
    w.send_at(0.0, [(0, 1, 1 * MB, "kept"), (0, 2, 1 * MB, "gone")])
    w.at(0.5, lambda: w.net.disconnect(2))
    w.env.run()
    assert w.landed == {"kept": pytest.approx(1.25)}


def test_nodes_on_one_machine_share_its_cores_and_waste_none() -> None:
    # Nodes 0, 1, 2 on one machine, a share of 8 Mbit/s of transport CPU each (24 together),
    # one core = 16 Mbit/s; node 3 is elsewhere, free; links fast. 0 sends 2 MB alone: one
    # core, 16 Mbit/s (its fixed share would take 2 s). At t = 0.5 (8 Mbit done) 1 starts 2 MB:
    # two busy members share 24 Mbit/s, 12 each: 0's last 8 Mbit land at 0.5 + 8/12 = 1.1667;
    # then 1 (8 Mbit sent by then) alone again at 16 Mbit/s: its last 8 Mbit take 0.5 s.
    inf = math.inf
    w = world(
        [1000 * MBIT] * 4,
        [1000 * MBIT] * 4,
        cpu=[8 * MBIT] * 3 + [inf],
        machines=[([0, 1, 2], 16 * MBIT)],
    )
    w.send_at(0.0, [(0, 3, 2 * MB, "first")])
    w.send_at(0.5, [(1, 3, 2 * MB, "second")])
    w.env.run()
    assert w.landed["first"] == pytest.approx(0.5 + 8 / 12, rel=1e-6)
    assert w.landed["second"] == pytest.approx(0.5 + 8 / 12 + 8 / 16, rel=1e-6)
    # Fixed shares (no machine): 2 s each, the second from 0.5 s.
    w = world([1000 * MBIT] * 4, [1000 * MBIT] * 4, cpu=[8 * MBIT] * 3 + [inf])
    w.send_at(0.0, [(0, 3, 2 * MB, "first")])
    w.send_at(0.5, [(1, 3, 2 * MB, "second")])
    w.env.run()
    assert w.landed == {"first": pytest.approx(2.0), "second": pytest.approx(2.5)}


def test_a_superseded_transfer_is_cancelled_and_frees_the_uplink() -> None:
    # Round 1's update to two peers (1 Mbit/s uplink, 2 x 250 MB: 4,000 s), superseded at
    # t=100 by round 2's 1 MB: that lands after 8 s alone, the old ones never.
    w = world([1 * MBIT, 100 * MBIT, 100 * MBIT], [100 * MBIT] * 3)
    w.send_at(0.0, [(0, 1, 250 * MB, "r1a"), (0, 2, 250 * MB, "r1b")], key=1)

    def newer() -> None:
        w.net.supersede(0, 2)
        w.net.send(0, 1, 1 * MB, "r2", 2)
        w.net.commit()

    w.at(100.0, newer)
    w.env.run()
    assert w.landed == {"r2": pytest.approx(108.0)}
    assert w.net.cancelled == 2
    assert w.net.cancelled_bytes == pytest.approx(100 * MBIT / 8, rel=1e-6)  # sent, wasted


def test_a_node_going_offline_cancels_its_transfers_both_ways() -> None:
    w = world([10 * MBIT] * 3, [10 * MBIT] * 3)
    w.send_at(0.0, [(0, 1, 10 * MB, "out")])
    w.send_at(0.0, [(2, 0, 10 * MB, "in")])
    w.send_at(0.0, [(2, 1, 10 * MB, "other")])
    w.at(1.0, lambda: w.net.disconnect(0))
    w.env.run()
    # "other" shared node 2's uplink with "in" for 1 s (5 Mbit), then had it alone.
    assert w.landed == {"other": pytest.approx(1.0 + 75 / 10)}


def test_a_partition_cancels_transfers_across_it() -> None:
    w = world([10 * MBIT] * 3, [10 * MBIT] * 3)
    w.send_at(0.0, [(0, 1, 10 * MB, "same"), (0, 2, 10 * MB, "across")])
    w.at(1.0, lambda: w.net.partition([0, 0, 1]))
    w.env.run()
    # 1 s at 5 Mbit/s, then the uplink alone: 75 Mbit / 10 Mbit/s.
    assert w.landed == {"same": pytest.approx(8.5)}


def test_a_link_class_change_applies_to_transfers_in_flight() -> None:
    w = world([10 * MBIT] * 2, [100 * MBIT] * 2)
    w.send_at(0.0, [(0, 1, 10 * MB, "m")])  # 80 Mbit
    w.at(2.0, lambda: w.net.set_bandwidth(0, 30 * MBIT, 100 * MBIT))
    w.env.run()
    assert w.landed["m"] == pytest.approx(2.0 + 60 / 30)


def test_control_messages_do_not_wait_behind_bulk_transfers() -> None:
    """A heartbeat during a 248 MB upload lands after latency + its own serialisation."""
    w = world([20 * MBIT] * 3, [20 * MBIT] * 3, latency_s=0.05)
    w.send_at(0.0, [(0, 1, 248 * MB, "big")])
    w.send_at(1.0, [(0, 2, 300, "hb1")])
    w.send_at(2.0, [(0, 1, 300, "hb2")])
    # At the 64 KiB threshold a message is control; one byte above, it is bulk and shares.
    w.send_at(3.0, [(0, 2, 65536, "ctl")])
    w.send_at(3.0, [(0, 2, 65537, "bulk")])
    w.env.run()
    assert w.landed["hb1"] == pytest.approx(1.0 + 300 * 8 / (20 * MBIT) + 0.05)
    assert w.landed["hb2"] == pytest.approx(2.0 + 300 * 8 / (20 * MBIT) + 0.05)
    assert w.landed["ctl"] < 4.0
    assert w.landed["bulk"] == pytest.approx(3.0 + 2 * 65537 * 8 / (20 * MBIT) + 0.05)
    assert w.landed["big"] > 99.0


def test_control_lane_is_fifo_among_control_messages() -> None:
    w = world([1 * MBIT] * 3, [1000 * MBIT] * 3)
    w.send_at(0.0, [(0, 1, 60_000, "first"), (0, 2, 60_000, "second")])
    w.env.run()
    assert w.landed["first"] == pytest.approx(0.48, rel=1e-3)
    assert w.landed["second"] == pytest.approx(0.96, rel=1e-3)


@dataclass(frozen=True)
class Start:
    t: float
    src: int
    dst: int
    mbit: int


starts = st.lists(
    st.builds(
        Start,
        t=st.floats(min_value=0.0, max_value=20.0),
        src=st.integers(0, 3),
        dst=st.integers(0, 3),
        mbit=st.integers(1, 200),
    ).filter(lambda s: s.src != s.dst),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(starts=starts, ups=st.lists(st.sampled_from([1, 10, 100]), min_size=4, max_size=4))
def test_no_transfer_beats_its_links_and_every_link_is_work_conserving(
    starts: list[Start], ups: list[int]
) -> None:
    """Whatever the mix: a transfer never lands before its size at the slower of its two
    links allows, all of them land, and a busy uplink never idles — the last transfer a
    node sends lands by (first start + its total bits / uplink) whenever downlinks are fat."""
    up = [float(u * MBIT) for u in ups]
    w = world(up, [1000 * MBIT] * 4)
    for k, s in enumerate(starts):
        w.send_at(s.t, [(s.src, s.dst, s.mbit * MBIT // 8, str(k))])
    w.env.run()
    assert len(w.landed) == len(starts)
    for k, s in enumerate(starts):
        assert w.landed[str(k)] >= s.t + s.mbit * MBIT / min(up[s.src], 1000 * MBIT) - 1e-6
    for src in range(4):
        mine = [(s, w.landed[str(k)]) for k, s in enumerate(starts) if s.src == src]
        if not mine:
            continue
        # Busy periods: the uplink serves at full rate whenever it has work.
        t_free = 0.0
        for s in sorted((s for s, _ in mine), key=lambda s: s.t):
            t_free = max(t_free, s.t) + s.mbit * MBIT / up[src]
        assert max(t for _, t in mine) == pytest.approx(t_free, rel=1e-6)


def max_min_reference(
    flows: list[tuple[float, int, int, float]], up: list[float], down: list[float]
) -> list[float]:
    """Exact max-min fair fluid simulation (progressive filling at every start and finish)
    of (start, src, dst, bits) flows: when each one finishes."""
    left = [b for _, _, _, b in flows]
    done = [math.inf] * len(flows)
    t = 0.0
    while True:
        active = [i for i, f in enumerate(flows) if f[0] <= t + 1e-12 and done[i] == math.inf]
        pending = [f[0] for i, f in enumerate(flows) if f[0] > t + 1e-12]
        if not active and not pending:
            return done
        rate = dict.fromkeys(active, 0.0)
        links = {("u", flows[i][1]) for i in active} | {("d", flows[i][2]) for i in active}
        cap = {lk: (up if lk[0] == "u" else down)[lk[1]] for lk in links}
        unfrozen = set(active)
        while unfrozen:
            # the tightest link fixes the rate of every unfrozen flow through it
            def on(lk: tuple[str, int], i: int) -> bool:
                return flows[i][1 if lk[0] == "u" else 2] == lk[1]

            share = {
                lk: cap[lk] / n for lk in links if (n := sum(1 for i in unfrozen if on(lk, i)))
            }
            lk, level = min(share.items(), key=lambda kv: kv[1])
            for i in [i for i in unfrozen if on(lk, i)]:
                rate[i] = level
                unfrozen.discard(i)
                for other in links:
                    if on(other, i):
                        cap[other] -= level
        step = min([left[i] / rate[i] for i in active] + [p - t for p in pending])
        for i in active:
            left[i] -= rate[i] * step
            if left[i] <= 1e-6 * flows[i][3]:
                done[i] = t + step
        t += step


@settings(max_examples=60, deadline=None)
@given(
    flows=st.lists(
        st.tuples(st.floats(0.0, 10.0), st.integers(0, 3), st.integers(1, 200)),
        min_size=1,
        max_size=8,
    ),
    ups=st.lists(st.sampled_from([1, 5, 20, 100]), min_size=8, max_size=8),
    downs=st.lists(st.sampled_from([2, 10, 50]), min_size=4, max_size=4),
)
def test_into_shared_downlinks_the_model_is_max_min_fair(
    flows: list[tuple[float, int, int]], ups: list[int], downs: list[int]
) -> None:
    """Senders 4..11 send one flow each into receivers 0..3 at random times, sizes and rates:
    every landing time equals an exact max-min fluid simulation's."""
    up = [1e9] * 4 + [u * MBIT for u in ups]
    down = [d * MBIT for d in downs] + [1e9] * 8
    w = world(up, down)
    spec: list[tuple[float, int, int, float]] = []
    for k, (t, dst, mbit) in enumerate(flows):
        src = 4 + k
        spec.append((t, src, dst, float(mbit * MBIT)))
        w.send_at(t, [(src, dst, mbit * MBIT // 8, str(k))])
    w.env.run()
    expected = max_min_reference(spec, up, down)
    for k in range(len(flows)):
        assert w.landed[str(k)] == pytest.approx(expected[k], rel=1e-6)


def test_loss_rate_is_respected_and_seeded() -> None:
    def run(seed: int) -> int:
        w = world([1e9] * 2, [1e9] * 2, loss=0.2, seed=seed)
        w.send_at(0.0, [(0, 1, 100, str(i)) for i in range(5000)])
        w.env.run()
        return 5000 - len(w.landed)

    dropped = run(1)
    assert 850 < dropped < 1150
    assert dropped == run(1)


def test_partition_drops_across_groups_then_heals() -> None:
    w = world([1e9] * 3, [1e9] * 3)
    w.net.partition([0, 0, 1])
    assert w.net.send(0, 1, 100, "a")
    assert not w.net.send(0, 2, 100, "b") and w.net.last_drop == "partition"
    w.net.heal()
    assert w.net.send(0, 2, 100, "c")


def test_region_latency_and_jitter() -> None:
    env = simpy.Environment()
    landed: list[float] = []
    net = Network(
        env,
        site_of=[0, 1],
        latency_s=[[0.01, 0.1], [0.1, 0.01]],
        uplink_bps=[1e12, 1e12],
        downlink_bps=[1e12, 1e12],
        rng=random.Random(3),
        deliver=lambda ev: landed.append(env.now),
        jitter_ms=Constant(value=5.0),
    )
    net.send(0, 1, 1, None)
    env.run()
    assert landed == [pytest.approx(0.105, abs=1e-6)]


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


def _burst_log(bursts: bool, loss: float) -> list[tuple[float, str]]:
    """Bursts of control messages over sites with unequal latencies (arrivals within a burst
    out of send order), a few equal arrival times, and plain timers due at the same instants.
    Without loss a burst takes the network's lean loop (``Network._control_burst``)."""
    env = simpy.Environment()
    log: list[tuple[float, str]] = []
    rng = random.Random(7)
    n = 12
    net = Network(
        env,
        site_of=[i % 3 for i in range(n)],
        latency_s=[[0.001, 0.004, 0.002], [0.004, 0.001, 0.003], [0.002, 0.003, 0.001]],
        uplink_bps=[8e6] * n,
        downlink_bps=[8e6] * n,
        rng=random.Random(3),
        deliver=lambda ev: log.append((env.now, str(ev.value))),
        loss=loss,
    )

    def burst(src: int, tag: int) -> None:
        if bursts:
            net.begin()
        for dst in rng.sample([d for d in range(n) if d != src], 8):
            net.send(src, dst, 1000, f"{tag}:{src}->{dst}")
            if dst % 4 == 0:  # a timer due exactly at this message's arrival
                simpy.Timeout(env, 0.002).callbacks.append(
                    lambda _, t=tag, d=dst: log.append((env.now, f"timer {t}:{d}"))
                )
        net.commit()

    for tag in range(40):
        src, at = rng.randrange(n), rng.choice([0.0, 0.001, 0.0015, 0.002]) * (tag // 4)
        simpy.Timeout(env, at).callbacks.append(lambda _, s=src, t=tag: burst(s, t))
    env.run()
    return log


@pytest.mark.parametrize("loss", [0.1, 0.0])
def test_a_burst_delivers_in_the_order_and_at_the_times_of_separate_events(loss: float) -> None:
    separate, burst = _burst_log(False, loss), _burst_log(True, loss)
    assert len(separate) > 250
    assert burst == separate


def test_bulk_loss_is_a_retransmission_delay_not_a_drop() -> None:
    # 1 MB at 8 Mbit/s both ends (1 s), 50 ms one-way: rtt 0.1 s, a window is 0.8 Mbit, so
    # 10 windows, each losing >= 1 of its 0.8e6 / 11,584 packets with q = 1 - 0.99^69.06;
    # each such window costs one more rtt. 2 setup rtts come before the first byte.
    for rtts in (0.0, 2.0):
        w = world([8 * MBIT] * 2, [8 * MBIT] * 2, latency_s=0.05, loss=0.01)
        w.net.bulk_setup_rtts = rtts
        w.send_at(0.0, [(0, 1, MB, "u")])
        w.env.run()
        q = 1.0 - 0.99 ** (0.8e6 / (8 * 1448))
        assert w.landed["u"] == pytest.approx(1.0 + 0.05 + 10 * q * 0.1 + rtts * 0.1, rel=1e-9)
        assert w.net.dropped == 0


def test_setup_round_trips_delay_bulk_only() -> None:
    w = world([8 * MBIT] * 2, [8 * MBIT] * 2, latency_s=0.05)
    w.net.bulk_setup_rtts = 2.0
    w.send_at(0.0, [(0, 1, MB, "bulk"), (0, 1, 1000, "control")])
    w.env.run()
    assert w.landed["bulk"] == pytest.approx(1.0 + 0.05 + 0.2)
    assert w.landed["control"] == pytest.approx(0.05 + 8000 / (8 * MBIT))  # no handshake


def _lead_burst(lead: int | None, cut_at: float | None = None, rtts: float = 0.0) -> World:
    """Node 0 sends 1 MB to nodes 1-3 in one burst on an 8 Mbit/s uplink (1 s per copy)."""
    w = world([8 * MBIT] * 4, [1000 * MBIT] * 4, latency_s=0.05, lead=lead)
    w.net.bulk_setup_rtts = rtts

    def go(_: simpy.Event) -> None:
        w.net.send_all(0, [(1, "a"), (2, "b"), (3, "c")], MB, key=1)
        w.net.commit()

    simpy.Timeout(w.env, 0.0).callbacks.append(go)
    if cut_at is not None:
        w.at(cut_at, lambda: w.net.supersede(0, 2))
    w.env.run()
    return w


def test_a_bursts_lead_copy_is_sent_alone_and_the_others_after_it() -> None:
    # Processor sharing: all three at 3 x 1 s. Lead first, no set-up: one alone in 1 s, then
    # the two others share 8 Mbit/s (2 s each): the same uplink work, the same last arrival.
    assert sorted(_lead_burst(None).landed.values()) == pytest.approx([3.05] * 3)
    leads = set()
    for seed in range(8):
        w = _lead_burst(seed)
        assert sorted(w.landed.values()) == pytest.approx([1.05, 3.05, 3.05])
        assert w.landed == _lead_burst(seed).landed  # seeded
        leads.add(min(w.landed, key=w.landed.__getitem__))
    assert len(leads) > 1  # the lead is drawn, not always the first in the list
    # Two set-up round trips (0.2 s): every copy lands 0.2 s after its data, and the others'
    # set-up runs after the lead's data (1 s), so their data starts at 1.2 s, not 1 s.
    w = _lead_burst(3, rtts=2.0)
    assert sorted(w.landed.values()) == pytest.approx([1.25, 3.45, 3.45])


def test_copies_waiting_for_their_lead_are_cancelled_with_it() -> None:
    w = _lead_burst(1, cut_at=0.5)
    assert w.landed == {}
    assert w.net.cancelled == 3  # the lead on the links, the two others still waiting
