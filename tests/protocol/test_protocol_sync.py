"""State sync: majority by proximity, liars outvoted, late joiners jump to the swarm's round."""

from __future__ import annotations

import random

import torch
from harness import SPEC, World, grad_like

from swarm_tune.runtime.protocol import (
    MessageReceived,
    PeerConnected,
    ProtocolConfig,
    ProtocolNode,
    StateResponse,
    effects,
)
from swarm_tune.runtime.protocol.sync import decide


def state(value: float, rnd: int, nonce: int = 7) -> StateResponse:
    return StateResponse(nonce, rnd, "claimed", (), grad_like(value))


def test_majority_agreeing_within_bound_wins_and_liar_is_outvoted() -> None:
    responses = {
        "a": state(1.0, 40),
        "b": state(1.001, 41),
        "liar": state(50.0, 10**9),
    }
    d = decide(responses, SPEC, drift_bound=0.05)
    assert d is not None
    assert (d.agreeing, d.responders, d.round) == (2, 3, 40)
    torch.testing.assert_close(d.tensors["w"], torch.full((4, 3), 1.0005))
    # Bit-identical valid answers (the byte-compare shortcut): exactly that state.
    same = {"a": state(0.3, 40), "b": state(0.3, 42), "c": state(0.3, 41), "x": state(0.3, 1)}
    same["x"].tensors["w"][0, 0] = float("nan")  # invalid: a responder that never agrees
    d = decide(same, SPEC, drift_bound=0.05)
    assert d is not None and (d.agreeing, d.responders, d.round) == (3, 4, 41)
    assert all(torch.equal(d.tensors[n], same["a"].tensors[n]) for n in same["a"].tensors)


def test_no_majority_no_state() -> None:
    responses = {"a": state(1.0, 5), "b": state(2.0, 5), "c": state(3.0, 5), "d": state(3.0, 5)}
    assert decide(responses, SPEC, 0.05) is None
    assert decide({}, SPEC, 0.05) is None


def test_invalid_responses_count_as_responders_but_never_agree() -> None:
    bad = StateResponse(7, 3, "x", (), {"w": torch.full((4, 3), float("nan")), "b": torch.zeros(3)})
    d = decide({"a": state(1.0, 3), "b": bad}, SPEC, 0.05)
    assert d is None  # 1 of 2 is not a strict majority


def test_late_joiner_catches_up_to_the_swarms_round_and_state() -> None:
    cfg = ProtocolConfig(quorum=1.0, min_peers=2, round_timeout=10.0, param_sync_every=0)
    w = World(cfg)
    for n in ("a", "b", "c"):
        w.add(n)
    w.connect_all()
    for n in ("a", "b", "c"):
        w.start(n)
    w.run_until(30.0)
    swarm_round = w.nodes["a"].round
    assert swarm_round >= 10
    late = w.add("late")
    for other in ("a", "b", "c"):
        late.handle(PeerConnected(other, "10.9.0.1"), w.now)
        w.nodes[other].handle(PeerConnected("late", "10.8.0.1"), w.now)
    w.start("late", catch_up=True)
    w.run_until(32.0)
    (loaded,) = w.effects_of(effects.LoadState, "late")
    assert loaded.round >= swarm_round
    (done,) = w.effects_of(effects.SyncFinished, "late")
    assert done.ok and done.agreeing >= 2
    assert abs(late.round - w.nodes["a"].round) <= 1


def test_unsolicited_state_response_is_ignored() -> None:
    n = ProtocolNode("me", ProtocolConfig(), SPEC, 10, random.Random(0))
    n.handle(PeerConnected("p", "10.0.0.1"), 0.0)
    n.start(0.0)
    assert n.handle(MessageReceived("p", state(9.0, 100)), 1.0) == []
    assert n.round == 0


def test_drift_is_measured_only_against_sketches_of_the_same_round() -> None:
    from swarm_tune.runtime.protocol import Heartbeat, LocalUpdateReady, TimerFired, TimerKey

    cfg = ProtocolConfig(quorum=5, drift_bound=0.05, param_sync_every=0)
    n = ProtocolNode("me", cfg, SPEC, 10, random.Random(0))
    for p in ("a", "b", "c"):
        n.handle(PeerConnected(p, f"10.{ord(p)}.0.1"), 0.0)
    n.start(0.0)
    n.handle(LocalUpdateReady(0, "grad", grad_like(1.0), 1.0, "d", (1.0, 1.0)), 0.5)
    # Peers report sketches far from ours but for another round: not comparable, no alarm.
    for p in ("a", "b", "c"):
        n.handle(MessageReceived(p, Heartbeat(0, 10, "x", (5.0, 5.0), sketch_round=7)), 1.0)
    out = n.handle(TimerFired(TimerKey("heartbeat")), 5.0)
    assert not [e for e in out if isinstance(e, effects.DriftObserved | effects.SyncStarted)]
    # Same round and far apart: measured, and a sync starts beside the open round.
    for p in ("a", "b", "c"):
        n.handle(MessageReceived(p, Heartbeat(0, 10, "x", (5.0, 5.0), sketch_round=0)), 6.0)
    out = n.handle(TimerFired(TimerKey("heartbeat")), 10.0)
    (drift,) = [e for e in out if isinstance(e, effects.DriftObserved)]
    assert drift.distance > 0.05 and drift.peers == 3
    assert [e.reason for e in out if isinstance(e, effects.SyncStarted)] == ["drift"]
    assert n.round == 0 and n.phase.value == "collecting"  # the round goes on meanwhile
