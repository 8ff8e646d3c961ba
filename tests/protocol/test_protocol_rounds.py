"""Round rules: close exactly once, quorum vs timeout, min_peers fallback, one submission."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from harness import SPEC, World, grad_like
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.protocol import (
    Contribution,
    LocalUpdateReady,
    MessageReceived,
    PeerConnected,
    Phase,
    ProtocolConfig,
    ProtocolNode,
    RejectReason,
    TimerFired,
    TimerKey,
    effects,
)
from swarm_tune.runtime.protocol.rounds import ProtocolStateError, Trigger, next_phase


def node(config: ProtocolConfig, peers: int = 3) -> ProtocolNode:
    n = ProtocolNode("me", config, SPEC, 10, random.Random(1))
    for i in range(peers):
        n.handle(PeerConnected(f"p{i}", f"10.{i}.0.1"), 0.0)
    return n


def own_ready(n: ProtocolNode, now: float, value: float = 1.0) -> list[effects.Effect]:
    return n.handle(LocalUpdateReady(n.round, "grad", grad_like(value), 1.0, "d", (0.0,)), now)


def contrib(rnd: int, value: float = 1.0, size: int = 10) -> Contribution:
    return Contribution(rnd, "grad", size, grad_like(value))


def closes(out: list[effects.Effect]) -> list[effects.RoundClosed]:
    return [e for e in out if isinstance(e, effects.RoundClosed)]


def test_quorum_closes_the_round_early_with_the_weighted_average() -> None:
    cfg = ProtocolConfig(
        quorum=3, min_peers=2, param_sync_every=0, subnet_cap=1.0, aggregation_rule="mean"
    )
    n = node(cfg)
    n.start(0.0)
    (sent,) = own_ready(n, 1.0, 1.0)
    assert isinstance(sent, effects.Send) and sent.peers == ("p0", "p1", "p2")
    assert isinstance(sent.message, Contribution) and sent.message.round == 0
    assert closes(n.handle(MessageReceived("p0", contrib(0, 2.0, size=30)), 1.5)) == []
    out = n.handle(MessageReceived("p1", contrib(0, 4.0, size=60)), 2.0)
    (closed,) = closes(out)
    assert (closed.trigger, closed.outcome, closed.contributors) == ("quorum", "average", 3)
    (applied,) = [e for e in out if isinstance(e, effects.ApplyAverage)]
    expected = (1.0 * 10 + 2.0 * 30 + 4.0 * 60) / 100
    torch.testing.assert_close(applied.update["w"], torch.full((4, 3), expected))
    assert applied.fallback is False
    assert n.round == 1 and n.phase is Phase.TRAINING


def test_timeout_closes_with_what_arrived_and_falls_back_below_min_peers() -> None:
    n = node(ProtocolConfig(quorum=1.0, min_peers=3, round_timeout=30.0, param_sync_every=0))
    n.start(0.0)
    own_ready(n, 1.0, 1.0)
    n.handle(MessageReceived("p0", contrib(0, 5.0)), 2.0)
    out = n.handle(TimerFired(TimerKey("round", 0)), 30.0)
    (closed,) = closes(out)
    assert (closed.trigger, closed.outcome, closed.contributors) == ("timeout", "fallback", 2)
    (applied,) = [e for e in out if isinstance(e, effects.ApplyAverage)]
    assert applied.fallback and applied.contributors == ("me",)
    torch.testing.assert_close(applied.update["b"], torch.ones(3))


def test_a_contribution_landing_after_its_senders_goodbye_still_counts() -> None:
    """A finishing node's last contribution is confirmed on the wire before its Goodbye,
    but the receiver may still be decoding it when the small Goodbye arrives. The Goodbye
    must not close the round on those left (a fallback below min_peers in the NAT test), and
    the contribution that lands after it counts."""
    from swarm_tune.runtime.protocol import Goodbye

    n = node(ProtocolConfig(quorum=1.0, min_peers=3, round_timeout=30.0, param_sync_every=0), 2)
    n.start(0.0)
    own_ready(n, 1.0, 1.0)
    assert closes(n.handle(MessageReceived("p0", contrib(0, 3.0)), 2.0)) == []
    out = n.handle(MessageReceived("p1", Goodbye()), 2.5)
    assert effects.Evict("p1", "goodbye") in out and closes(out) == []
    (closed,) = closes(n.handle(MessageReceived("p1", contrib(0, 5.0)), 2.6))
    assert (closed.trigger, closed.outcome, closed.contributors) == ("quorum", "average", 3)


def test_contributors_that_leave_still_count_and_the_round_waits_for_the_rest() -> None:
    """Two peers contribute, then say Goodbye (their campaign ended). Their updates stay
    counted and the round still waits for every other expected peer: dropping them from
    the expected set while their updates stayed counted closed the round one update early,
    as a fallback below min_peers (the 6-node calibration in CI: 5 of 6, the 6th landing)."""
    from swarm_tune.runtime.protocol import Goodbye

    cfg = ProtocolConfig(quorum=1.0, min_peers=5, round_timeout=30.0, param_sync_every=0)
    n = node(cfg, 4)
    n.start(0.0)
    own_ready(n, 1.0, 1.0)
    for i, peer in enumerate(("p0", "p1")):
        assert closes(n.handle(MessageReceived(peer, contrib(0, 2.0 + i)), 2.0 + i)) == []
    for peer in ("p0", "p1"):
        assert closes(n.handle(MessageReceived(peer, Goodbye()), 4.0)) == []
    assert closes(n.handle(MessageReceived("p2", contrib(0, 4.0)), 5.0)) == []
    (closed,) = closes(n.handle(MessageReceived("p3", contrib(0, 5.0)), 7.0))
    assert (closed.trigger, closed.outcome, closed.contributors) == ("quorum", "average", 5)


def test_silent_contributors_evicted_at_a_heartbeat_tick_stay_expected() -> None:
    """The heartbeat tick's eviction of silent peers follows the same rule as a Goodbye:
    a peer whose update is admitted stays in the open round's expected set, one that never
    contributed leaves it."""
    cfg = ProtocolConfig(
        quorum=1.0,
        min_peers=5,
        round_timeout=30.0,
        heartbeat_interval=1.0,
        eviction_timeout=5.0,
        param_sync_every=0,
    )
    n = node(cfg, 4)
    n.start(0.0)
    own_ready(n, 1.0, 1.0)
    n.handle(MessageReceived("p0", contrib(0, 2.0)), 1.5)
    n.handle(MessageReceived("p2", contrib(0, 3.0)), 6.5)
    out = n.handle(TimerFired(TimerKey("heartbeat")), 7.0)  # p0, p1, p3 silent since <= 1.5
    assert {e.peer for e in out if isinstance(e, effects.Evict)} == {"p0", "p1", "p3"}
    assert n._open is not None and n._open.expected == {"p0", "p2"}


def test_straggler_without_own_update_skips_and_ignores_its_late_result() -> None:
    n = node(ProtocolConfig(quorum=1.0, min_peers=3, param_sync_every=0))
    n.start(0.0)
    out = n.handle(TimerFired(TimerKey("round", 0)), 30.0)
    assert closes(out)[0].outcome == "skipped"
    assert own_ready_for(n, 0, 31.0) == []  # the result for round 0 arrives too late
    assert n.round == 1


def own_ready_for(n: ProtocolNode, rnd: int, now: float) -> list[effects.Effect]:
    return n.handle(LocalUpdateReady(rnd, "grad", grad_like(1.0), 1.0, "d", (0.0,)), now)


def test_one_submission_per_peer_per_round() -> None:
    n = node(ProtocolConfig(quorum=4, param_sync_every=0))
    n.start(0.0)
    assert n.handle(MessageReceived("p0", contrib(0, 1.0)), 1.0) == []
    out = n.handle(MessageReceived("p0", contrib(0, 2.0)), 1.1)
    assert out == [effects.ContributionRejected(0, "p0", RejectReason.DUPLICATE)]


def test_stale_and_far_future_rejected_near_future_buffered() -> None:
    n = node(ProtocolConfig(quorum=4, future_window=2, param_sync_every=0))
    n.start(0.0)
    own_ready(n, 0.5)
    n.handle(TimerFired(TimerKey("round", 0)), 30.0)  # now in round 1
    assert n.handle(MessageReceived("p0", contrib(0)), 31.0) == [
        effects.ContributionRejected(0, "p0", RejectReason.STALE)
    ]
    assert n.handle(MessageReceived("p0", contrib(4)), 31.0) == [
        effects.ContributionRejected(4, "p0", RejectReason.TOO_FAR_FUTURE)
    ]
    assert n.handle(MessageReceived("p1", contrib(2, 3.0)), 31.0) == []  # buffered
    own_ready(n, 32.0)
    n.handle(TimerFired(TimerKey("round", 1)), 60.0)  # round 2 opens and admits p1
    out = own_ready(n, 61.0)
    assert not closes(out)
    out = n.handle(TimerFired(TimerKey("round", 2)), 90.0)
    assert closes(out)[0].contributors == 2  # own + buffered p1


def test_structural_rejections() -> None:
    n = node(ProtocolConfig(quorum=4, param_sync_every=0))
    n.start(0.0)
    bad_shape = Contribution(0, "grad", 10, {"w": torch.zeros(3, 3), "b": torch.zeros(3)})
    bad_dtype = Contribution(
        0, "grad", 10, {"w": torch.zeros(4, 3, dtype=torch.float64), "b": torch.zeros(3)}
    )
    nan = Contribution(0, "grad", 10, {"w": torch.full((4, 3), float("nan")), "b": torch.zeros(3)})
    size = Contribution(0, "grad", 0, grad_like(1.0))
    kind = Contribution(0, "params", 10, grad_like(1.0))
    verdicts = [
        n.handle(MessageReceived(p, c), 1.0)[0]
        for p, c in [("p0", bad_shape), ("p1", bad_dtype), ("p2", nan), ("p3", size), ("p4", kind)]
    ]
    assert [v.reason for v in verdicts] == [
        RejectReason.SHAPE,
        RejectReason.DTYPE,
        RejectReason.NON_FINITE,
        RejectReason.BAD_SIZE,
        RejectReason.WRONG_KIND,
    ]


def test_scaled_and_sign_flipped_updates_rejected_at_close() -> None:
    cfg = ProtocolConfig(quorum=5, min_peers=2, param_sync_every=0, direction_test="always")
    n = node(cfg, peers=4)
    n.start(0.0)
    own_ready(n, 1.0, 1.0)
    n.handle(MessageReceived("p0", contrib(0, 1.1)), 1.0)
    n.handle(MessageReceived("p1", contrib(0, 0.9)), 1.0)
    n.handle(MessageReceived("p2", contrib(0, 100.0)), 1.0)
    out = n.handle(MessageReceived("p3", contrib(0, -1.0)), 1.0)
    reasons = {e.peer: e.reason for e in out if isinstance(e, effects.ContributionRejected)}
    assert reasons == {"p2": RejectReason.NORM, "p3": RejectReason.DIRECTION}
    assert closes(out)[0].contributors == 3


def test_phase_table_refuses_unknown_transitions() -> None:
    with pytest.raises(ProtocolStateError):
        next_phase(Phase.SYNCING, Trigger.OWN_READY)
    assert next_phase(Phase.TRAINING, Trigger.OWN_READY) is Phase.COLLECTING


@settings(max_examples=60, deadline=None)
@given(
    n_nodes=st.integers(min_value=2, max_value=6),
    seed=st.integers(min_value=0, max_value=2**16),
    delay=st.floats(min_value=0.01, max_value=12.0),
    quorum=st.one_of(  # a count below min_peers is refused by ProtocolConfig
        st.integers(min_value=2, max_value=6), st.floats(min_value=0.1, max_value=1.0)
    ),
    dropped=st.sets(st.integers(min_value=0, max_value=40), max_size=10),
)
def test_every_round_closes_exactly_once_under_random_timing(
    n_nodes: int, seed: int, delay: float, quorum: int | float, dropped: set[int]
) -> None:
    rng = random.Random(seed)
    cfg = ProtocolConfig(quorum=quorum, min_peers=2, round_timeout=10.0, param_sync_every=0)
    w = World(cfg, delay=delay)
    w.train_delay = rng.uniform(0.1, 12.0)
    w.updates = lambda node_id, r: (
        None
        if r in dropped and node_id == "n0"
        else grad_like(1.0 + 0.01 * r + rng.random() * 0.01)
    )
    for i in range(n_nodes):
        w.add(f"n{i}")
    w.connect_all()
    for i in range(n_nodes):
        w.start(f"n{i}")
    w.run_until(200.0)
    for i in range(n_nodes):
        closed = [e.round for e in w.effects_of(effects.RoundClosed, f"n{i}")]
        # Strictly increasing: each round closes at most once; gaps only from a lag sync.
        assert closed == sorted(set(closed)) and Counter(closed).most_common(1)[0][1] == 1
        syncs = w.effects_of(effects.LoadState, f"n{i}")
        assert closed == list(range(len(closed))) or syncs, "rounds skipped without a sync"
        applied = [e.round for e in w.effects_of(effects.ApplyAverage, f"n{i}")]
        assert len(applied) == len(set(applied))
        # The hard timeout keeps everyone moving, sync pauses included.
        assert w.nodes[f"n{i}"].round >= 200.0 / (cfg.round_timeout + cfg.sync_timeout) - 1


def test_subnet_cap_limits_one_networks_share_of_the_average() -> None:
    n = ProtocolNode(
        "me",
        ProtocolConfig(quorum=4, subnet_cap=0.5, param_sync_every=0, aggregation_rule="mean"),
        SPEC,
        10,
        random.Random(1),
    )
    n.handle(PeerConnected("s1", "192.0.2.1"), 0.0)
    n.handle(PeerConnected("s2", "192.0.2.2"), 0.0)  # same /24 as s1
    n.handle(PeerConnected("h", "198.51.100.7"), 0.0)
    n.start(0.0)
    own_ready(n, 1.0, 0.0)
    n.handle(MessageReceived("s1", contrib(0, 1.0, size=10)), 1.0)
    n.handle(MessageReceived("s2", contrib(0, 1.0, size=10)), 1.0)
    out = n.handle(MessageReceived("h", contrib(0, 0.0, size=10)), 1.0)
    (applied,) = [e for e in out if isinstance(e, effects.ApplyAverage)]
    # Uncapped the Sybil pair would hold 20/40 = 0.5 of the weight; with cap 0.5 the level is
    # T = 0.5 * 20 / (1 - 0.5) = 20, so they keep exactly half: average 0.5.
    torch.testing.assert_close(applied.update["w"], torch.full((4, 3), 0.5))


def test_own_update_shares_its_subnet_with_lan_peers() -> None:
    # Everyone on one /24 (a LAN, loopback): the cap cannot single anyone out, so the
    # result is the plain weighted average — our own update gets no outsized share.
    cfg = ProtocolConfig(quorum=3, subnet_cap=0.25, param_sync_every=0, aggregation_rule="mean")
    n = ProtocolNode("me", cfg, SPEC, 10, random.Random(1), address="127.0.0.1")
    n.handle(PeerConnected("a", "127.0.0.2"), 0.0)
    n.handle(PeerConnected("b", "127.0.0.3"), 0.0)
    n.start(0.0)
    own_ready(n, 1.0, 0.0)
    n.handle(MessageReceived("a", contrib(0, 1.0, size=10)), 1.0)
    out = n.handle(MessageReceived("b", contrib(0, 2.0, size=20)), 1.0)
    (applied,) = [e for e in out if isinstance(e, effects.ApplyAverage)]
    torch.testing.assert_close(applied.update["w"], torch.full((4, 3), (10 + 40) / 40))


def test_nodes_that_accept_the_same_set_apply_bit_identical_averages() -> None:
    cfg = ProtocolConfig(quorum=1.0, min_peers=2, param_sync_every=0)
    w = World(cfg)
    rng = random.Random(3)
    values = {(n, r): rng.uniform(0.5, 1.5) for n in ("a", "b", "c", "d") for r in range(20)}
    w.updates = lambda node_id, r: {
        "w": torch.full((4, 3), values[(node_id, r)]) / 3.0,
        "b": torch.linspace(0.1, 0.7, 3) * values[(node_id, r)],
    }
    for n in ("a", "b", "c", "d"):
        w.add(n, dataset_size=7 + ord(n))
    w.connect_all()
    for n in ("a", "b", "c", "d"):
        w.start(n)
    w.run_until(8.0)
    applied = {n: w.effects_of(effects.ApplyAverage, n) for n in ("a", "b", "c", "d")}
    assert min(len(v) for v in applied.values()) >= 5
    for rnd in range(5):
        sets = {applied[n][rnd].contributors for n in applied}
        assert len(sets) == 1  # everyone accepted everyone
        ref = applied["a"][rnd].update
        for n in ("b", "c", "d"):
            for name in ref:
                assert torch.equal(applied[n][rnd].update[name], ref[name])
