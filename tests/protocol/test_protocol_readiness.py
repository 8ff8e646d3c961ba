"""Readiness, admission and campaign progress: decisions the core makes for both drivers.

* A node waits, visibly (WAITING_FOR_PEERS, a WaitingForPeers effect), until ``min_peers``
  members, itself included, are present; after ``start_deadline`` it proceeds alone.
* Admission is one handshake: an unverified transport connection gets a hello (with
  sketch_round) and no membership; the peer's first verified message admits it, at the
  address its connection reported.
* Campaign progress counts rounds that were averaged: a node alone never advances it.
* A bootstrap peer whose frames belong to another run (another layer shard's swarm) is not
  waited for: it can never become a member.
"""

from __future__ import annotations

import random
from dataclasses import replace

from harness import SPEC, World

from swarm_tune.runtime.protocol import (
    Heartbeat,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    Phase,
    ProtocolConfig,
    ProtocolNode,
    TimerFired,
    effects,
)
from swarm_tune.runtime.protocol.events import TimerKey, WireRejected
from swarm_tune.runtime.protocol.node import START_TIMER
from swarm_tune.runtime.protocol.reasons import RejectReason

CFG = ProtocolConfig(min_peers=2, start_deadline=10.0, round_timeout=5.0, param_sync_every=0)


def started_swarm(cfg: ProtocolConfig, count: int) -> World:
    """``count`` connected nodes n0.., all started."""
    w = World(cfg)
    for i in range(count):
        w.add(f"n{i}")
    w.connect_all()
    for i in range(count):
        w.start(f"n{i}")
    return w


def lone(cfg: ProtocolConfig = CFG) -> ProtocolNode:
    return ProtocolNode("n0", cfg, SPEC, 10, random.Random(0), address="10.0.0.1")


def test_a_lone_node_waits_visibly_then_a_verified_message_admits_and_starts_it() -> None:
    n = lone()
    out = n.start(0.0, catch_up=True)
    assert n.phase is Phase.WAITING_FOR_PEERS
    assert effects.WaitingForPeers(1, 2, 10.0) in out
    assert not any(isinstance(e, effects.TrainLocal) for e in out)
    # A transport connection is not membership: the core greets, and keeps the address.
    out = n.handle(PeerConnected("p1", "192.0.2.7", verified=False), 1.0)
    [hello] = out
    assert isinstance(hello, effects.Send) and hello.peers == ("p1",)
    assert isinstance(hello.message, Heartbeat) and hello.message.sketch_round == n.sketch_round
    assert n.phase is Phase.WAITING_FOR_PEERS and n.members() == 1
    # Its first verified message admits it (with that address) and ends the wait.
    out = n.handle(MessageReceived("p1", Heartbeat(0, 10, "d", (), (), -1)), 2.0)
    rec = n.peers.get("p1")
    assert rec is not None and rec.address == "192.0.2.7"
    started = [e for e in out if isinstance(e, effects.StartedRounds)]
    assert started == [effects.StartedRounds(0, 2, "peers")]
    assert effects.CancelTimer(TimerKey(START_TIMER)) in out
    assert n.phase is Phase.SYNCING  # catch_up with a peer present: ask for state first


def test_after_the_deadline_it_proceeds_alone_and_makes_no_progress() -> None:
    w = World(CFG)
    w.add("n0")
    w.start("n0")
    assert w.nodes["n0"].phase is Phase.WAITING_FOR_PEERS
    w.run_until(60.0)
    n = w.nodes["n0"]
    assert [e.reason for e in w.effects_of(effects.StartedRounds)] == ["deadline"]
    closed = w.effects_of(effects.RoundClosed)
    assert len(closed) >= 5 and {c.outcome for c in closed} == {"fallback"}
    assert n.progress == 0  # rounds alone never count towards max_rounds


def test_waiting_forever_with_no_deadline() -> None:
    n = lone(ProtocolConfig(min_peers=2, start_deadline=0.0))
    out = n.start(0.0)
    assert effects.WaitingForPeers(1, 2, None) in out
    assert not any(isinstance(e, effects.SetTimer) and e.key.name == START_TIMER for e in out)
    assert n.handle(TimerFired(TimerKey(START_TIMER)), 1e9) == []
    assert n.phase is Phase.WAITING_FOR_PEERS


def test_progress_counts_averaged_rounds() -> None:
    w = started_swarm(CFG, 3)
    assert not w.effects_of(effects.WaitingForPeers)  # already enough members
    w.run_until(20.0)
    for i in range(3):
        n = w.nodes[f"n{i}"]
        averaged = [c.round for c in w.effects_of(effects.RoundClosed, f"n{i}")]
        assert averaged and n.progress == max(averaged) + 1


def test_a_campaign_completes_on_averaged_rounds_never_alone() -> None:
    w = World(CFG)
    w.add("n0")
    w.start("n0")
    w.run_until(80.0)
    alone = w.nodes["n0"]
    assert alone.round >= 5 and not alone.completed(3)  # past round 3, but never averaged
    w = started_swarm(CFG, 2)
    w.run_until(20.0)
    assert all(n.completed(3) for n in w.nodes.values())
    # Peers that finished first and left: a node that averaged with them completes too.
    late = w.nodes["n1"]
    late.progress = 2
    assert not late.completed(3)
    late.handle(PeerDisconnected("n0"), 20.0)
    assert late.completed(3)


def test_two_nodes_left_below_min_peers_past_the_end_complete() -> None:
    """Not only a node left alone: two that cannot average any more (min_peers 3) complete,
    instead of running fallback rounds with each other until killed."""
    w = started_swarm(replace(CFG, min_peers=3), 3)
    w.run_until(20.0)
    late = w.nodes["n1"]
    assert late.round >= 3 and late.completed(3)
    late.progress = 2  # the others averaged round 2 without it, and left
    assert not late.completed(3)
    late.handle(PeerDisconnected("n0"), 20.0)
    assert late.members() == 2 and late.completed(3)


def test_a_first_message_carries_the_address_when_no_connection_reported_one() -> None:
    n = lone()
    n.start(0.0)
    n.handle(MessageReceived("p2", Heartbeat(0, 10, "d", (), (), -1), "198.51.100.9"), 1.0)
    rec = n.peers.get("p2")
    assert rec is not None and rec.address == "198.51.100.9" and rec.subnet == "198.51.100.0/24"


def test_an_expected_peer_of_another_run_is_not_waited_for() -> None:
    # A shared bootstrap list across layer shards: p2 answers in another shard's run.
    n = lone()
    n.start(0.0, expected=("p1", "p2"))
    n.handle(MessageReceived("p1", Heartbeat(0, 10, "d", (), (), -1)), 1.0)
    assert n.phase is Phase.WAITING_FOR_PEERS  # p2 was dialled at bootstrap: wait for it
    out = n.handle(WireRejected("p2", RejectReason.WRONG_RUN), 2.0)
    assert effects.StartedRounds(0, 2, "peers") in out
    assert n.peers.get("p2") is None  # and it never became a member
    # Refused before start (the net driver feeds messages from the first connection on).
    n = lone()
    n.handle(WireRejected("p2", RejectReason.WRONG_RUN), 0.5)
    n.handle(PeerConnected("p1", "192.0.2.7", verified=False), 0.6)
    n.handle(MessageReceived("p1", Heartbeat(0, 10, "d", (), (), -1)), 0.7)
    n.start(1.0, expected=("p1", "p2"))
    assert n.phase is Phase.TRAINING
