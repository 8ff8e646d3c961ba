"""Membership, reputation and bans: eviction after silence, rejoin, ban threshold and expiry."""

from __future__ import annotations

import random

from harness import SPEC, World, grad_like

from swarm_tune.runtime.protocol import (
    Contribution,
    MessageReceived,
    PeerConnected,
    ProtocolConfig,
    ProtocolNode,
    RejectReason,
    TimerFired,
    TimerKey,
    WireRejected,
    effects,
)
from swarm_tune.runtime.protocol.membership import subnet_of
from swarm_tune.runtime.protocol.reputation import Reputation


def test_silent_peer_is_evicted_after_the_timeout_and_welcomed_back() -> None:
    cfg = ProtocolConfig(heartbeat_interval=5.0, eviction_timeout=60.0, min_peers=2, quorum=2)
    w = World(cfg)
    for n in ("a", "b", "c"):
        w.add(n)
    w.connect_all()
    for n in ("a", "b", "c"):
        w.start(n)
    w.run_until(20.0)
    assert "c" in w.nodes["a"].peers.live_peers()
    w.down.add("c")  # c crashes: no more messages to or from it
    w.run_until(20.0 + 59.0)
    assert "c" in w.nodes["a"].peers.live_peers(), "not evicted before the timeout"
    w.run_until(20.0 + 70.0)
    assert "c" not in w.nodes["a"].peers.live_peers()
    evictions = [e for e in w.effects_of(effects.Evict, "a") if e.peer == "c"]
    assert [e.reason for e in evictions] == ["silent"]
    # c comes back: its first message makes it live again, its record (reputation) kept.
    w.down.discard("c")
    w.start("c", catch_up=True)
    w.run_until(130.0)
    assert "c" in w.nodes["a"].peers.live_peers()
    assert w.nodes["c"].round >= w.nodes["a"].round - 1


def test_goodbye_evicts_at_once() -> None:
    n = ProtocolNode("me", ProtocolConfig(), SPEC, 10, random.Random(0))
    n.handle(PeerConnected("p", "10.0.0.1"), 0.0)
    from swarm_tune.runtime.protocol import Goodbye

    assert n.handle(MessageReceived("p", Goodbye()), 1.0) == [effects.Evict("p", "goodbye")]
    assert n.peers.live_peers() == []


def test_ban_after_threshold_then_expiry_gives_a_clean_slate() -> None:
    cfg = ProtocolConfig(ban_window=4, ban_threshold=0.5, ban_duration=100.0)
    rep = Reputation(cfg)
    assert rep.record("p", None, 0.0) is None
    assert rep.record("p", RejectReason.NON_FINITE, 1.0) is None
    assert rep.record("p", None, 2.0) is None
    # Fourth verdict fills the window at 2/4 = 0.5 rejections: banned.
    assert rep.record("p", RejectReason.NORM, 3.0) == 103.0
    assert rep.is_banned("p", 50.0)
    assert not rep.is_banned("p", 103.0)
    assert rep.rejection_rate("p") == 0.0
    # Neutral reasons (slow but honest peers) never count.
    for t in range(10):
        assert rep.record("q", RejectReason.STALE, float(t)) is None
    assert rep.rejection_rate("q") == 0.0


def test_banned_peer_contributions_are_refused_and_wire_errors_count() -> None:
    cfg = ProtocolConfig(ban_window=3, ban_threshold=1.0, ban_duration=10.0, quorum=5)
    n = ProtocolNode("me", cfg, SPEC, 10, random.Random(0))
    n.handle(PeerConnected("evil", "10.0.0.9"), 0.0)
    n.start(0.0)
    out = []
    for _ in range(3):
        out += n.handle(WireRejected("evil", RejectReason.BAD_SIGNATURE), 1.0)
    assert effects.Ban("evil", 11.0) in out
    refused = n.handle(MessageReceived("evil", Contribution(0, "grad", 10, grad_like(1.0))), 2.0)
    assert refused == [effects.ContributionRejected(0, "evil", RejectReason.BANNED)]
    # After expiry it may contribute again.
    n.handle(TimerFired(TimerKey("round", 0)), 30.0)
    assert (
        n.handle(MessageReceived("evil", Contribution(1, "grad", 10, grad_like(1.0))), 31.0) == []
    )


def test_subnet_keys() -> None:
    assert subnet_of("192.0.2.77") == "192.0.2.0/24"
    assert subnet_of("192.0.2.77", ipv4_prefix=16) == "192.0.0.0/16"
    assert subnet_of("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert subnet_of("::ffff:192.0.2.1") == "192.0.2.0/24"
    assert subnet_of("not-an-ip") == subnet_of("") == "unknown"


def test_reputation_memory_is_bounded_however_many_identities_pass_by() -> None:
    from swarm_tune.runtime.protocol.peer_memory import TRACKED_PEERS

    cfg = ProtocolConfig(ban_window=2, ban_threshold=1.0)
    rep = Reputation(cfg)
    for i in range(TRACKED_PEERS + 500):
        rep.record(f"sybil{i}", RejectReason.NORM, float(i))
    assert len(rep._verdicts) == TRACKED_PEERS
    assert rep.rejection_rate("sybil0") == 0.0  # the oldest was forgotten
    assert rep.rejection_rate(f"sybil{TRACKED_PEERS + 499}") == 1.0
    # A round close records a batch at once (record_all): the same table, order and bans
    # as one call per verdict, also for a batch that crosses the bound.
    verdicts = [(f"p{i % 300}", RejectReason.NORM if i % 3 else None) for i in range(600)]
    one, batch = Reputation(cfg), Reputation(cfg)
    for r in (one, batch):
        r._verdicts = {f"old{i}": (True,) for i in range(TRACKED_PEERS - 200)}
    singles = [one.record(p, reason, 1.0) for p, reason in verdicts]
    assert batch.record_all(verdicts[:300], 1.0) + batch.record_all(verdicts[300:], 1.0) == singles
    assert list(batch._verdicts.items()) == list(one._verdicts.items())


def _stranger_world(contributor_rounds: int) -> World:
    """a, b, c train; s joins at t=20, heartbeats like any member, never contributes."""
    cfg = ProtocolConfig(
        quorum=1.0, min_peers=2, round_timeout=30.0, contributor_rounds=contributor_rounds
    )
    w = World(cfg, updates=lambda n, r: None if n == "s" else grad_like(1.0 + 0.01 * r))
    for n in ("a", "b", "c"):
        w.add(n)
    w.connect_all()
    for n in ("a", "b", "c"):
        w.start(n)
    w.run_until(20.0)
    w.add("s")
    for n in ("a", "b", "c"):
        w.nodes[n].handle(PeerConnected("s", w.addresses["s"]), w.now)
        w.nodes["s"].handle(PeerConnected(n, w.addresses[n]), w.now)
    w.start("s", catch_up=True)
    w.run_until(200.0)
    return w


def test_a_newcomer_that_never_contributes_does_not_keep_rounds_waiting() -> None:
    w = _stranger_world(contributor_rounds=3)
    assert "s" in w.nodes["a"].peers.live_peers()  # it is a member: it heartbeats
    after = [e for e in w.effects_of(effects.RoundClosed, "a") if e.opened_at > 21.0]
    assert len(after) > 50, "rounds kept waiting for the stranger"
    assert {e.trigger for e in after} == {"quorum"}
    assert {e.contributors for e in after} == {3}  # a, b, c: every honest one, never s
    # The same world under the old rule (every live peer expected) times out every round.
    old = _stranger_world(contributor_rounds=0)
    stalled = [e for e in old.effects_of(effects.RoundClosed, "a") if e.opened_at > 21.0]
    assert stalled and {e.trigger for e in stalled} == {"timeout"}


def test_a_newcomer_that_contributes_is_waited_for_from_then_on() -> None:
    """b joins a running swarm: it is not waited for before its first contribution, and
    from its first counted contribution on, every round waits for it."""
    cfg = ProtocolConfig(quorum=1.0, min_peers=2, round_timeout=30.0, contributor_rounds=3)
    w = World(cfg)
    for n in ("a", "c"):
        w.add(n)
    w.connect_all()
    for n in ("a", "c"):
        w.start(n)
    w.run_until(10.0)
    w.add("b")
    for n in ("a", "c"):
        w.nodes[n].handle(PeerConnected("b", w.addresses["b"]), w.now)
        w.nodes["b"].handle(PeerConnected(n, w.addresses[n]), w.now)
    w.start("b", catch_up=True)
    w.run_until(60.0)
    applied = w.effects_of(effects.ApplyAverage, "a")
    with_b = [e for e in applied if "b" in e.contributors]
    assert with_b, "b's contributions never counted"
    first = with_b[0].round
    closed = {e.round: e.trigger for e in w.effects_of(effects.RoundClosed, "a")}
    later = [e for e in applied if e.round > first]
    # Waited for: each later round either has b or ran to its timeout waiting for it.
    assert all("b" in e.contributors or closed[e.round] == "timeout" for e in later)
    assert sum("b" in e.contributors for e in later) >= 10


def _tick(n: ProtocolNode, now: float) -> list[effects.Effect]:
    from swarm_tune.runtime.protocol.node import HEARTBEAT_TIMER

    return n.handle(TimerFired(TimerKey(HEARTBEAT_TIMER)), now)


def test_the_core_dials_advertised_and_evicted_peers_within_a_budget() -> None:
    from swarm_tune.runtime.protocol import Goodbye, Heartbeat

    cfg = ProtocolConfig(
        dial_peers=2, peer_exchange=5, redial_interval=30.0, heartbeat_interval=1.0
    )
    n = ProtocolNode("me", cfg, SPEC, 10, random.Random(0))
    n.handle(PeerConnected("b", "10.0.0.2"), 0.0)
    n.handle(MessageReceived("b", Heartbeat(0, 10, "d", (), (), -1, "/ip4/10.0.0.2/p2p/b")), 0.0)
    advertised = tuple((f"x{i}", f"/ip4/10.1.0.{i}/tcp/1/p2p/x{i}") for i in range(3))
    hb = Heartbeat(0, 10, "d", (), (("b", "hb"), ("me", "self"), *advertised), -1)
    # A stranger repeating its heartbeat cannot make us dial more: one budget per tick.
    for _ in range(5):
        assert n.handle(MessageReceived("b", hb), 1.0) == []
    dials = [e for e in _tick(n, 1.5) if isinstance(e, effects.Dial)]
    assert dials == [effects.Dial("x0", advertised[0][1]), effects.Dial("x1", advertised[1][1])]
    # Not again within redial_interval; b (live, heard) and ourselves never.
    n.handle(MessageReceived("b", hb), 2.0)
    dials = [e for e in _tick(n, 2.5) if isinstance(e, effects.Dial)]
    assert dials == [effects.Dial("x2", advertised[2][1])]
    # An evicted peer is redialled with the hint it declared, once per redial_interval.
    n.handle(PeerConnected("c", "10.0.0.3"), 3.0)
    n.handle(MessageReceived("c", Heartbeat(0, 10, "d", (), (), -1, "/ip4/10.0.0.3/p2p/c")), 3.0)
    n.handle(MessageReceived("c", Goodbye()), 4.0)
    assert [e for e in _tick(n, 5.0) if isinstance(e, effects.Dial)] == [
        effects.Dial("c", "/ip4/10.0.0.3/p2p/c")
    ]
    assert [e for e in _tick(n, 6.0) if isinstance(e, effects.Dial)] == []
    assert [e for e in _tick(n, 36.0) if isinstance(e, effects.Dial)] == [
        effects.Dial("c", "/ip4/10.0.0.3/p2p/c")
    ]
    # A banned peer is never dialled.
    for _ in range(cfg.ban_window):
        n.handle(WireRejected("c", RejectReason.MALFORMED), 40.0)
    dials = [e for e in _tick(n, 80.0) if isinstance(e, effects.Dial)]
    assert "c" not in {e.peer for e in dials}  # (b, silent since t=2, is evicted and dialled)


def test_the_dial_memory_keeps_only_the_redial_interval() -> None:
    """A node that keeps hearing of new peers (peer exchange in a big world) must not keep a
    dial time for each forever: past redial_interval one blocks nothing. Cost ~0.05 s."""
    from swarm_tune.runtime.protocol import PeersFound

    cfg = ProtocolConfig(dial_peers=2, redial_interval=10.0, heartbeat_interval=1.0)
    n = ProtocolNode("me", cfg, SPEC, 10, random.Random(0))
    dialled = []
    for t in range(200):
        found = tuple((f"p{t}_{i}", f"/ip4/10.3.{t}.{i}/tcp/1/p2p/p{t}_{i}") for i in range(2))
        n.handle(PeersFound(found), float(t))
        dialled += [e.peer for e in _tick(n, t + 0.5) if isinstance(e, effects.Dial)]
    assert len(dialled) == 400  # every new peer dialled once
    # Dials of the last 10 s only (the old table held all 400, up to TRACKED_PEERS).
    assert len(n._dialed) <= 2 * 11


def test_peers_found_by_the_dht_are_dialled_by_the_core_within_its_budget() -> None:
    from swarm_tune.runtime.protocol import PeersFound

    n = ProtocolNode("me", ProtocolConfig(dial_peers=2), SPEC, 10, random.Random(0))
    found = tuple((f"p{i}", f"/ip4/10.2.0.{i}/tcp/1/p2p/p{i}") for i in range(3))
    assert n.handle(PeersFound((("me", "/ip4/1.1.1.1/tcp/1/p2p/me"), *found)), 0.0) == []
    first = [e for e in _tick(n, 1.0) if isinstance(e, effects.Dial)]
    assert first == [effects.Dial(p, h) for p, h in found[:2]]  # never ourselves
    off = ProtocolNode("me", ProtocolConfig(dial_peers=0), SPEC, 10, random.Random(0))
    off.handle(PeersFound(found), 0.0)
    assert [e for e in _tick(off, 1.0) if isinstance(e, effects.Dial)] == []
