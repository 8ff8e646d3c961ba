"""A swarm split in state (a healed partition) agrees on an early parameter round; stale
state-sync answers are not loaded.

The rule (node.py, _early_params): a quarter or more (at least two) of the same-round sketches
a node hears lie beyond drift_bound from their median -> it makes round + 2 a parameter round
and announces it in heartbeats; whoever hears an announcement near ahead takes the earliest;
at most one such round per early_params_gap rounds, whatever peers announce.
"""

from __future__ import annotations

import random

import pytest
from harness import SPEC, grad_like

from swarm_tune.runtime.net.protocol_codec import from_envelope, to_envelope
from swarm_tune.runtime.protocol import (
    Heartbeat,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    ProtocolConfig,
    ProtocolNode,
    StateResponse,
    TimerFired,
    effects,
)
from swarm_tune.runtime.protocol.events import TimerKey
from swarm_tune.runtime.wire import Identity, decode, encode

PEERS = [f"p{i}" for i in range(6)]
NEAR, FAR = (1.0, 1.0), (1.0, 2.0)  # FAR is 0.6 away (relative) from the median of NEARs


def node(**cfg: object) -> ProtocolNode:
    config = ProtocolConfig(param_sync_every=10, drift_bound=0.05, **cfg)  # type: ignore[arg-type]
    n = ProtocolNode("me", config, SPEC, 10, random.Random(0))
    for i, p in enumerate(PEERS):
        n.handle(PeerConnected(p, f"10.{i}.0.1"), 0.0)
    n.start(0.0)
    return n


def hear(n: ProtocolNode, sketches: list[tuple[float, ...]], param_round: int = -1) -> None:
    for p, sk in zip(PEERS, sketches, strict=True):
        hb = Heartbeat(n.round, 10, "d", sk, sketch_round=n.round, param_round=param_round)
        n.handle(MessageReceived(p, hb), 1.0)


def comes_back(n: ProtocolNode, now: float = 0.5) -> None:
    """An evicted peer reconnects (what a healed partition looks like)."""
    n.handle(PeerDisconnected(PEERS[0]), now)
    n.handle(PeerConnected(PEERS[0], "10.0.0.1"), now)


def tick(n: ProtocolNode, now: float) -> Heartbeat:
    out = n.handle(TimerFired(TimerKey("heartbeat")), now)
    (hb,) = [e.message for e in out if isinstance(e, effects.Send)]
    assert isinstance(hb, Heartbeat)
    return hb


def kinds(n: ProtocolNode, upto: int) -> dict[int, str]:
    """Close rounds by their timeouts up to ``upto``; the kind each round opened with."""
    seen: dict[int, str] = {}
    while n.round < upto:
        for e in n.handle(TimerFired(TimerKey("round", n.round)), 2.0 + n.round):
            if isinstance(e, effects.TrainLocal):
                seen[e.round] = e.kind
    return seen


def test_a_split_swarm_schedules_and_announces_an_early_parameter_round() -> None:
    n = node()
    hear(n, [NEAR, NEAR, NEAR, FAR, FAR, FAR])  # halves of a healed partition ...
    assert tick(n, 1.0).param_round == -1  # ... only once an evicted peer came back
    comes_back(n, 1.1)
    assert tick(n, 1.2).param_round == 2
    assert kinds(n, 3) == {1: "grad", 2: "params", 3: "grad"}
    assert tick(n, 9.0).param_round == -1  # done: nothing more to announce


@pytest.mark.parametrize(
    "sketches", [[NEAR] * 6, [NEAR, NEAR, NEAR, NEAR, NEAR, FAR]], ids=["agreeing", "one_drifted"]
)
def test_no_early_round_without_a_split(sketches: list[tuple[float, ...]]) -> None:
    n = node()
    comes_back(n)
    hear(n, sketches)
    assert tick(n, 1.0).param_round == -1
    assert set(kinds(n, 3).values()) == {"grad"}


def test_an_announced_round_is_adopted_and_liars_cannot_stall_the_swarm() -> None:
    n = node(early_params_gap=5)
    hear(n, [NEAR] * 6, param_round=10**9)  # far ahead: moot
    assert tick(n, 1.0).param_round == -1
    hear(n, [NEAR] * 6, param_round=2)  # near: adopted and passed on, no split seen here
    assert tick(n, 1.5).param_round == 2
    hear(n, [NEAR] * 6, param_round=1)  # an earlier one wins
    assert tick(n, 1.6).param_round == 1
    assert kinds(n, 2) == {1: "params", 2: "grad"}
    seen: dict[int, str] = {}
    while n.round < 8:  # a liar announcing every round: one per early_params_gap rounds
        hear(n, [NEAR] * 6, param_round=n.round + 1)
        seen |= kinds(n, n.round + 1)
    assert seen == {3: "grad", 4: "grad", 5: "grad", 6: "grad", 7: "params", 8: "grad"}
    off = node(early_params_gap=0)
    comes_back(off)
    hear(off, [NEAR, NEAR, NEAR, FAR, FAR, FAR], param_round=2)
    assert tick(off, 1.0).param_round == -1
    assert set(kinds(off, 3).values()) == {"grad"}


def test_param_round_roundtrips_on_the_wire() -> None:
    me = Identity.from_seed(bytes(range(32)))
    for q in (-1, 0, 7):
        env = to_envelope(Heartbeat(3, 10, "d", (0.5,), param_round=q), "run", me.peer_id)
        out = from_envelope(decode(bytes(encode(env, me)), expected_run_id="run"))
        assert isinstance(out, Heartbeat) and out.param_round == q


def test_stale_state_sync_answers_are_not_loaded() -> None:
    """Answers collected before a partition and decided at the sync timeout describe the
    swarm as it was: a node 10 rounds further on keeps its own state."""
    n = node(lag_rounds=50)
    hear(n, [NEAR, NEAR, NEAR, NEAR, NEAR, NEAR])
    started = n._begin_sync("drift", 1.0)
    (ask,) = [e for e in started if isinstance(e, effects.Send)]
    nonce = ask.message.nonce  # type: ignore[union-attr]
    for p in PEERS[:3]:
        n.handle(MessageReceived(p, StateResponse(nonce, 0, "d", (), grad_like(1.0))), 1.5)
    kinds(n, 10)
    out = n.handle(TimerFired(TimerKey("sync", nonce)), 30.0)
    assert not any(isinstance(e, effects.LoadState) for e in out)
    (done,) = [e for e in out if isinstance(e, effects.SyncFinished)]
    assert not done.ok


def test_one_liar_cannot_schedule_an_early_parameter_round() -> None:
    """An announcement is a claim: adopted only from a quarter of the live peers (>= 2)."""
    n = node(early_params_gap=5)
    liar = Heartbeat(n.round, 10, "d", NEAR, sketch_round=n.round, param_round=2)
    n.handle(MessageReceived(PEERS[0], liar), 1.0)
    assert tick(n, 1.2).param_round == -1
    assert set(kinds(n, 3).values()) == {"grad"}
    m = node(early_params_gap=5)
    for p in PEERS[:2]:  # two of six: a quarter
        m.handle(MessageReceived(p, liar), 1.0)
    assert tick(m, 1.2).param_round == 2
