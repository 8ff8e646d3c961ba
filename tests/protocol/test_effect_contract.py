"""One effect contract: the protocol harness, the sim driver and the net driver, fed the same
scripted trace, must produce the same effects and end in the same protocol state.

What is under test is each driver's *dispatch*: how it turns the world into events (its real
entry points: the sim's ``_on_delivery``, the net driver's ``_on_incoming`` on signed bytes)
and how it executes effects (timers, sends, learning jobs, bans). So the node under test
runs its own timer machinery in each world (SimPy timeouts; the net driver's TimerService
under trio's MockClock; the harness's queue), and the learner's answers are scripted (the
same LocalUpdateReady at the same time everywhere). The transport is a fake in the net case:
it records what the driver sends instead of opening streams; the real transport is tested in
tests/net and tests/node.

A driver that drops, adds or reorders an event, fires a timer at a different time, or makes
its own protocol decision (admission, bans, readiness) changes the effect list here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy
import torch
import trio
import trio.testing

from swarm_tune.runtime.net.config import NetConfig
from swarm_tune.runtime.net.driver import DriverConfig, NodeDriver
from swarm_tune.runtime.net.events import Incoming
from swarm_tune.runtime.net.protocol_codec import to_envelope
from swarm_tune.runtime.net.refusals import Refusals
from swarm_tune.runtime.protocol import effects as fx
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.events import (
    Event,
    LocalUpdateReady,
    MessageReceived,
    PeerConnected,
)
from swarm_tune.runtime.protocol.messages import Contribution, Heartbeat, Message
from swarm_tune.runtime.protocol.node import ProtocolNode
from swarm_tune.runtime.protocol.tensors import ModelSpec, UpdateKind
from swarm_tune.runtime.wire.codec import encode
from swarm_tune.runtime.wire.identity import Identity
from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import parse_scenario

SPEC_TENSORS = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}
SPEC = ModelSpec.from_tensors(SPEC_TENSORS)
RUN_ID = "contract"
END = 23.5  # not on a timer deadline: "until" is inclusive in one world, not another
SCENARIO = parse_scenario(
    """
name: contract
seed: 3
nodes: {count: 3}
compute:
  classes: [{name: idle, step_time: {dist: constant, value: 1000}}]
protocol:
  round_timeout: 6
  heartbeat_interval: 2
  eviction_timeout: 9
  quorum: 2
  min_peers: 2
  param_sync_every: 0
  ban_window: 2
  ban_threshold: 1.0
  ban_duration: 100
"""
)
CFG: ProtocolConfig = SCENARIO.protocol_config()
NAMES = ("n0000", "n0001", "n0002")  # the sim's ids; the net's are real peer ids, renamed
ADDRESSES = ("10.0.0.1", "10.0.1.2", "10.0.2.3")  # the sim's honest addresses (_honest_address)


def upd(value: float) -> dict[str, torch.Tensor]:
    return {name: torch.full_like(t, value) for name, t in SPEC_TENSORS.items()}


def ready(rnd: int, value: float) -> LocalUpdateReady:
    return LocalUpdateReady(rnd, "grad", upd(value), 1.0, "dg", (0.5, 0.5))


def contribution(rnd: int, value: float) -> Contribution:
    return Contribution(rnd, "grad", 10, upd(value))


# (time, kind, peer index, payload): the inputs to node 0, besides its own timers.
# "msg": a message from a peer; "garbage": bytes that do not decode (net) / the equivalent
# wire rejection (sim, harness); "ready": the learner's answer to TrainLocal.
TRACE: list[tuple[float, str, int, Any]] = [
    (0.5, "ready", 0, ready(0, 1.0)),
    (0.6, "msg", 1, contribution(0, 1.1)),
    (0.7, "msg", 2, contribution(0, float("nan"))),  # round 0 closed at quorum: stale
    (1.1, "msg", 1, Heartbeat(1, 10, "d1", (0.5, 0.5), (), 0)),
    (1.5, "ready", 0, ready(1, 1.2)),
    (2.9, "garbage", 2, b"\x00not a frame"),
    (3.1, "garbage", 2, b"\x01still not"),  # a full window of bad verdicts: ban
    (3.3, "msg", 1, contribution(1, 1.3)),
    (7.5, "ready", 0, ready(2, 1.4)),
    (8.1, "msg", 1, Heartbeat(2, 10, "d2", (0.5, 0.5), (), 1)),
]


class Recording(ProtocolNode):
    """The core, unchanged, with every (now, event, effects) it handled written down."""

    def __init__(self, node_id: str, log: list[tuple[float, str, list[fx.Effect]]]) -> None:
        super().__init__(node_id, CFG, SPEC, 10, random.Random("contract"), address=ADDRESSES[0])
        self.log = log

    def start(self, now: float, catch_up: bool = False) -> list[fx.Effect]:
        out = super().start(now, catch_up)
        self.log.append((now, "start", list(out)))
        return out

    def handle(self, event: Event, now: float) -> list[fx.Effect]:
        out = super().handle(event, now)
        self.log.append((now, type(event).__name__, list(out)))
        return out


@dataclass
class Outcome:
    log: list[tuple[float, str, list[fx.Effect]]] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    node: ProtocolNode | None = None

    def normal(self) -> list[tuple[float, str, list[str]]]:
        return [(round(t, 6), what, [self._show(e) for e in out]) for t, what, out in self.log]

    def state(self) -> tuple[Any, ...]:
        n = self.node
        assert n is not None
        banned = [self._name(p) for p in NAMES[1:] + tuple(self.rename) if self._banned(n, p)]
        return (
            n.round,
            n.phase.name,
            [self._name(p) for p in n.peers.live_peers()],
            sorted(set(banned)),
            [(self._name(r.peer), r.round, r.live) for r in n.peers.records()],
        )

    def _banned(self, n: ProtocolNode, peer: str) -> bool:
        return n.reputation.is_banned(peer, END)

    def _name(self, peer: str) -> str:
        return self.rename.get(peer, peer)

    def _show(self, eff: fx.Effect) -> str:
        if isinstance(eff, fx.Send):
            msg = eff.message
            peers = ",".join(self._name(p) for p in eff.peers)
            return f"Send({peers}: {type(msg).__name__} {getattr(msg, 'round', '')})"
        text = repr(eff)
        for old, new in self.rename.items():
            text = text.replace(old, new)
        return text


# --- the three worlds ------------------------------------------------------------------------


def run_harness() -> Outcome:
    from harness import World

    out = Outcome()
    world = World(CFG)
    world.updates = lambda node_id, r: None  # the trace answers TrainLocal
    node = Recording(NAMES[0], out.log)
    world.nodes[NAMES[0]] = node
    world.down.update(NAMES[1:])  # peers exist only as the trace's senders
    for i in (1, 2):
        world.execute(NAMES[0], node.handle(PeerConnected(NAMES[i], ADDRESSES[i]), 0.0))
    world.execute(NAMES[0], node.start(0.0))
    for t, kind, peer, payload in TRACE:
        if kind == "ready":
            world.push(t, NAMES[0], payload)
        elif kind == "msg":
            world.push(t, NAMES[0], MessageReceived(NAMES[peer], payload))
        else:
            from swarm_tune.runtime.protocol.events import WireRejected
            from swarm_tune.runtime.protocol.reasons import RejectReason

            world.push(t, NAMES[0], WireRejected(NAMES[peer], RejectReason.MALFORMED))
    world.run_until(END)
    out.node = node
    return out


class _Learner:
    """What the sim driver's learning effects touch; records, computes nothing."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    def dataset_size(self) -> int:
        return 10

    def parameters(self) -> dict[str, torch.Tensor]:
        return upd(0.0)

    def apply_average(self, kind: UpdateKind, averaged: dict[str, torch.Tensor]) -> None:
        self.applied.append(len(averaged))

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        raise AssertionError("no state sync in this trace")


class _Engine:
    spec = SPEC

    def add_node(self, node_index: int, shard: int, layer: object = None) -> _Learner:
        return _Learner()

    def dataset_size(self, node_index: int) -> int:
        return 10

    def payload_bytes(self) -> int:
        return 4 * SPEC.numel

    def __getattr__(self, name: str) -> Callable[..., Any]:
        raise AssertionError(f"the trace never reaches the learning engine ({name})")


def run_sim() -> Outcome:
    out = Outcome()
    driver = SimDriver(SCENARIO, engine=_Engine())  # type: ignore[arg-type]
    assert [n.id for n in driver.nodes] == list(NAMES)
    assert [n.address for n in driver.nodes] == list(ADDRESSES)
    me = driver.nodes[0]
    driver._bring_up(me, 0)
    me.proto = node = Recording(NAMES[0], out.log)
    for i in (1, 2):
        driver._execute(me, node.handle(PeerConnected(NAMES[i], ADDRESSES[i]), 0.0))
    driver._execute(me, node.start(0.0))
    env = driver.env

    def at(t: float, action: Callable[[], None]) -> None:
        ev = simpy.Timeout(env, t - env.now)
        ev.callbacks.append(lambda _ev: action())

    for t, kind, peer, payload in TRACE:
        if kind == "ready":
            at(t, lambda ev=payload: driver._feed(me, ev))
        elif kind == "msg":
            received = MessageReceived(NAMES[peer], payload)
            delivery = simpy.Timeout(env, t, (0, me.incarnation, peer, received, 1))
            delivery.callbacks.append(driver._on_delivery)
        else:
            from swarm_tune.runtime.protocol.events import WireRejected
            from swarm_tune.runtime.protocol.reasons import RejectReason

            at(t, lambda p=peer: driver._feed(me, WireRejected(NAMES[p], RejectReason.MALFORMED)))
    env.run(until=END)
    out.node = node
    return out


class _FakeTransport:
    """Stands in for NetNode: records what the driver asks of the network."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.config = NetConfig()
        self.refusals = Refusals()
        self.sent: list[tuple[str, int]] = []
        self.disconnected: list[str] = []
        self.services: dict[str, object] = {}  # no DHT: the driver starts no discovery

    async def send_small(self, peer: str, data: bytes) -> None:
        self.sent.append((peer, len(data)))

    async def send_bulk(self, peer: str, data: bytes | bytearray) -> None:
        self.sent.append((peer, len(data)))

    async def disconnect(self, peer: str) -> None:
        self.disconnected.append(peer)

    def connected_peers(self) -> list[str]:
        return []

    def prioritise(self, is_member: Callable[[str], bool]) -> None:
        pass


def _identities() -> list[Identity]:
    """Three identities whose peer ids sort like the sim's names (n0000 < n0001 < n0002), so
    every sorted listing in the core has the same order in both worlds."""
    ids = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 4)]
    return sorted(ids, key=lambda i: i.peer_id)


def run_net() -> Outcome:
    out = Outcome()
    ids = _identities()
    out.rename = {ident.peer_id: name for ident, name in zip(ids, NAMES, strict=True)}
    me = ids[0].peer_id
    transport = _FakeTransport(me)
    node = Recording(me, out.log)
    driver = NodeDriver(node, transport, None, ids[0], DriverConfig(RUN_ID))  # type: ignore[arg-type]
    seq = [0]

    def wire(sender: int, msg: Message) -> bytes:
        seq[0] += 1
        env = to_envelope(msg, RUN_ID, ids[sender].peer_id, round=getattr(msg, "round", 0))
        return bytes(encode(env, ids[sender]))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            driver._nursery = nursery
            nursery.start_soon(driver._timers.run)
            for i in (1, 2):
                driver._feed(PeerConnected(ids[i].peer_id, ADDRESSES[i]))
            driver._execute(node.start(trio.current_time()))
            for t, kind, peer, payload in TRACE:
                await trio.sleep_until(t)
                if kind == "ready":
                    driver._feed(payload)
                elif kind == "msg":
                    data = wire(peer, payload)
                    await driver._on_incoming(Incoming(ids[peer].peer_id, ADDRESSES[peer], data))
                else:
                    await driver._on_incoming(Incoming(ids[peer].peer_id, ADDRESSES[peer], payload))
            await trio.sleep_until(END)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    out.node = node
    return out


def test_harness_sim_and_net_agree_on_one_trace() -> None:
    ref, sim, net = run_harness(), run_sim(), run_net()
    # The trace exercises what it is meant to (else agreement would prove little).
    kinds = {type(e).__name__ for _, _, out in ref.log for e in out}
    for needed in ("ApplyAverage", "ContributionRejected", "Ban", "Evict", "RoundClosed"):
        assert needed in kinds, needed
    assert any(what == "TimerFired" for _, what, _ in ref.log)
    assert sim.normal() == ref.normal()
    assert net.normal() == ref.normal()
    assert sim.state() == ref.state() == net.state()
    assert not math.isnan(END)
