"""One partition of a partitioned run: the world of the nodes it owns, advanced window by window.

Why a partitioned world at all: a run too big for one process (or one machine) is split into K
partitions, each a SimPy world holding the nodes it owns (node ``i`` belongs to partition
``i % K``; a coalition lives with its first member), advanced in lock-step by ``sim.pdes`` over
windows no longer than the smallest link latency W (conservative parallel discrete-event
simulation): whatever a node sends during a window [b, b') arrives at b' or later, so the
windows' messages can be exchanged at b' and injected into their receivers' worlds at their
exact virtual arrival times before anything at b' runs.

Why this is its own network model and not the single-process one (``sim.network``): in the
single world a message's arrival depends on state at both ends (the receiver's downlink is
shared fairly with every other sender, the control lane's FIFO at the receiver, one loss/jitter
generator for all senders, a receiver that goes offline cancels the bulk transfers into it),
and the order of same-time events depends on every node's history (SimPy's global event ids).
Across machines none of that is known inside a window. The partition-local model keeps only
what a sender's world knows, and every rule below holds in the same way whatever the partition
count, so K = 1, 2, 4 ... give the same tables bit for bit (tests/sim/test_sim_pdes.py):

* **links**: a transfer is limited by its sender: the uplink is shared fairly by the sender's
  transfers (the same ``sim.links`` processor sharing), the control lane is the sender's FIFO;
  the receiver's downlink is NOT modelled (infinitely fast), nor transport CPU
  (``transport_s_per_mb`` is refused). Loss and jitter are drawn from the sender's own
  generator. Arrival = sender done + latency (+ the handshake / loss-recovery terms).
* **cancellation**: a node that leaves cancels what it sends; what is in flight to it is
  dropped when it arrives (its world knows it is offline), not cancelled at the sender.
* **lives**: a message is delivered only if the receiver is online at arrival and its current
  life began no later than the send (the single world's "the receiver's incarnation at send").
* **connections**: the dialling end learns of the peer at once, the dialled end one base
  latency later (a real handshake takes one); whom to dial, and whether a dial is answered, is
  decided on the online set of the last window boundary (known to every partition).
* **ordering**: arrivals injected at a boundary are ordered by (time, sender, sender's
  sequence number), never by which world they came from.
* **monitoring** (swarm round, evaluation, stop, round-timed script events) happens at window
  boundaries, before anything at that instant runs (the single world's monitor runs after
  the timers that fall on its tick); boundaries are every W and every monitor tick.

Memory: a partition holds the heavy state of its own nodes only (learning rows and optimizer
state, protocol cores, compute generators, codec residuals, link generators); every partition
keeps a light record of every node (id, address, site, bandwidth, compute profile, churn plan,
online flag), which the dial and delivery rules need (docs/performance.md gives the figures).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from swarm_tune.runtime.protocol.events import MessageReceived
from swarm_tune.sim.adversary import Adversary
from swarm_tune.sim.bursts import Burst, event_ids
from swarm_tune.sim.churn import node_rng
from swarm_tune.sim.distributions import Normal
from swarm_tune.sim.driver import SimDriver, SimNode
from swarm_tune.sim.learning import PARAMS
from swarm_tune.sim.network import Network
from swarm_tune.sim.scenario import Scenario

CONNECT = "connect"  # tag of a connection notice's value (a message's value starts with an int)

# (arrival time, sender, sender's sequence number, delivery value): one crossing of a window.
Posted = tuple[float, int, int, Any]


class PartitionError(ValueError):
    """The scenario cannot run partitioned (what the partition-local model cannot express)."""


def owners(total: int, parts: int, coalitions: Sequence[Sequence[int]]) -> list[int]:
    """The partition of each node: ``i % parts``, except that a coalition (nodes sharing one
    crafted update, e.g. a Sybil group) lives with its first member: the member that crafts
    first in a round decides its update, and only one world can know which one that is."""
    out = [i % parts for i in range(total)]
    for members in coalitions:
        for i in members:
            out[i] = members[0] % parts
    return out


def window_s(scenario: Scenario, latency_s: Sequence[Sequence[float]]) -> float:
    """The lookahead W: the smallest link latency (jitter only adds to it)."""
    w = min((v for row in latency_s for v in row if math.isfinite(v)), default=math.inf)
    if not 0.0 < w < math.inf:
        raise PartitionError(f"a partitioned run needs a positive smallest link latency, got {w}")
    return w


def check_partitionable(scenario: Scenario) -> None:
    """Refuse, before anything runs, what the partition-local model does not cover."""
    problems = []
    if scenario.learning.mode == "real":
        problems.append("learning.mode real")
    if scenario.protocol_config().model_shard_total > 1:
        problems.append("layer shards")
    if any(c.transport_s_per_mb for c in scenario.compute.classes):
        problems.append("compute transport_s_per_mb (a receiver-side cost)")
    if scenario.links.bulk_lead_first:
        problems.append("links.bulk_lead_first (not in the partition-local model)")
    jitter = scenario.links.jitter_ms
    if isinstance(jitter, Normal) and jitter.min < 0:
        problems.append("negative link jitter (it would undercut the lookahead window)")
    if problems:
        raise PartitionError("cannot run partitioned: " + ", ".join(problems))


@contextmanager
def quiet() -> Iterator[None]:
    """``SimDriver.run``'s settings for a whole partitioned run (one torch thread, no
    automatic cyclic GC: see there), restored afterwards. Per window instead, the GC ran
    between windows over the whole world's objects."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if enabled:
            gc.enable()


class PartNetwork(Network):
    """``Network`` under the partition-local model (module docstring)."""

    def disconnect(self, node: int) -> None:
        self.bulk.cancel_outgoing(node, self.env.now)

    def set_bandwidth(self, node: int, up_bps: float, down_bps: float) -> None:
        super().set_bandwidth(node, up_bps, math.inf)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A partition at a window boundary: what the coordinator needs from it."""

    rounds: list[tuple[int, int]]  # (node, protocol round) of its online nodes
    honest: list[int]  # its online honest nodes
    counters: dict[str, int]  # network and acceptance counters (summed over partitions)
    events: int
    wasted_bits: dict[int, float]  # bits cancelled transfers had sent, per sender, this window


class PartWorld(SimDriver):
    """The world of one partition (module docstring); ``sim.pdes`` drives it."""

    def __init__(self, scenario: Scenario, part: int, parts: int) -> None:
        check_partitionable(scenario)
        self.part, self.parts = part, parts
        super().__init__(scenario)
        if self._omniscient:
            raise PartitionError("cannot run partitioned: omniscient adversaries see every update")
        total = scenario.total_nodes
        self.network.bulk.wasted_by_src = {}
        self.network.node_rngs = [
            node_rng(self.seed, "network", i) if self.owner[i] == part else None
            for i in range(total)
        ]
        self._outbox: list[Posted] = []
        self._seq = [0] * total  # per sender: its posts' order
        self._up_at = [math.inf] * total  # when each own node's current life began
        self._snap_online: list[int] = []  # every partition's online nodes, last boundary
        self._snap_set: frozenset[int] = frozenset()
        self.window = window_s(scenario, self.network.latency_s)
        self._setup()

    # -- world construction ---------------------------------------------------------------

    def _place(self, adversaries: dict[int, Adversary]) -> None:
        shared: dict[int, list[int]] = {}
        for i in sorted(adversaries):
            shared.setdefault(id(adversaries[i].coalition), []).append(i)
        coalitions = [m for m in shared.values() if len(m) > 1]
        self.owner = owners(self.s.total_nodes, self.parts, coalitions)
        self.owned = [i for i, k in enumerate(self.owner) if k == self.part]

    def _holds(self, idx: int) -> bool:
        return self.owner[idx] == self.part

    def _build_network(self, total: int) -> Network:
        single = super()._build_network(total)
        return PartNetwork(
            self.env,
            single.site_of,
            single.latency_s,
            single.uplink_bps,
            [math.inf] * total,
            single._rng,
            self._on_delivery,
            self.s.links.jitter_ms,
            self.s.links.loss,
            bulk_setup_rtts=self.s.links.bulk_setup_rtts,
            post=self._post,
        )

    def _setup(self) -> None:
        """``SimDriver._run``'s start, for the own nodes (the coordinator monitors)."""
        initial = self.s.nodes.count
        waiting = self._absent | self.groups.offline_at_start
        started = {i for i in range(initial) if i not in waiting}
        mine = [i for i in sorted(started) if self._holds(i)]
        for i in mine:
            self._bring_up(self.nodes[i], 0)
        self._milestone = 0
        now = self.env.now
        nodes = self.nodes
        for a, b in self._initial_pairs(initial, started.__contains__):
            if not self._same_shard(a, b):
                continue
            for x, y in ((a, b), (b, a)):  # both ends at once, in the single world's order
                if self._holds(x):
                    px = nodes[x].proto
                    assert px is not None
                    self._execute(nodes[x], px.handle(self._hello[y], now))
        for i in mine:
            proto = nodes[i].proto
            assert proto is not None
            self._execute(nodes[i], proto.start(0.0, catch_up=self.s.nodes.start_sync))
        self.timeline.start(self, self._absent)
        for i in self.churn.churners:
            if self._holds(i):
                self.env.process(self._churn_process(i))
        for at, idx in self.churn.joiner_times(initial):
            if self._holds(idx):
                self.env.process(self._joiner(idx, at))
        for k in range(len(self.s.partitions)):
            self.env.process(self._partition_process(k))

    # -- what crosses partitions ------------------------------------------------------------

    def _post(self, at: float, value: Any) -> None:
        src = value[2] if value[0] != CONNECT else value[3]
        self._seq[src] += 1
        self._outbox.append((at, src, self._seq[src], value))

    def _targets(
        self, src: int, peers: Sequence[str], received: MessageReceived, size: int
    ) -> list[tuple[int, tuple[int, float, int, MessageReceived, int]]]:
        now, index = self.env.now, self._index  # the send time stands for the receiver's life
        return [
            (dst, (dst, now, src, received, size))
            for dst in [index.get(peer) for peer in peers]
            if dst is not None
        ]

    def _bring_up(self, node: SimNode, start_round: int) -> None:
        self._up_at[node.index] = self.env.now
        super()._bring_up(node, start_round)

    def _connect(self, a: SimNode, b: SimNode) -> None:
        """``a`` (one of ours) learns of ``b`` now; ``b`` learns of ``a`` one latency later."""
        if not self._same_shard(a.index, b.index) or a.proto is None:
            return
        now = self.env.now
        self._execute(a, a.proto.handle(self._hello[b.index], now))
        lat = self.network.latency_s[self.site_of[a.index]][self.site_of[b.index]]
        if math.isfinite(lat):
            self._post(now + lat, (CONNECT, b.index, now, a.index))

    def _dial(self, node: SimNode) -> None:
        me = node.index
        others = [i for i in self._snap_online if i != me and self._same_shard(i, me)]
        if not self.flat:
            k = min(len(others), self.s.rounds.bootstrap_peers)
            others = node_rng(self.seed, f"dial{node.incarnation}", me).sample(others, k)
        for i in sorted(others):
            self._connect(node, self.nodes[i])

    def _fx_dial(self, node: SimNode, eff: Any) -> None:
        dst = self._index.get(eff.peer)
        if dst is not None and dst in self._snap_set and self.network.reachable(node.index, dst):
            self._connect(node, self.nodes[dst])

    def leave(self, idx: int, crash: bool) -> None:
        if self._holds(idx):
            self._leave(idx, crash)

    def join(self, idx: int, kind: str) -> None:
        if self._holds(idx):
            self._join(idx, kind)

    def _inject(self, inbox: list[Posted]) -> None:
        """Queue arrivals from every partition at their times, in (time, sender, seq) order,
        stamped with the receiver's life (module docstring: lives)."""
        if not inbox:
            return
        inbox.sort(key=lambda p: (p[0], p[1], p[2]))
        env, nodes, up_at = self.env, self.nodes, self._up_at
        if inbox[0][0] < env.now:
            raise AssertionError(f"arrival {inbox[0][0]} before the boundary {env.now}")
        items = []
        ids = event_ids(env)
        for at, _, _, value in inbox:
            if value[0] == CONNECT:
                _, dst, sent, src = value
                life = nodes[dst].incarnation if up_at[dst] <= sent else -2
                value = (CONNECT, dst, life, src)
            else:
                dst, sent, src, received, size = value
                life = nodes[dst].incarnation if up_at[dst] <= sent else -2
                value = (dst, life, src, received, size)
            items.append((at, next(ids), value))
        Burst(env, items, self._on_injected)

    def _on_injected(self, ev: Any) -> None:
        value = ev._value
        if value[0] != CONNECT:
            self._on_delivery(ev)
            return
        _, dst, life, src = value
        b, a = self.nodes[dst], self.nodes[src]
        if b.online and b.incarnation == life and b.proto is not None:
            self._execute(b, b.proto.handle(self._hello[a.index], self.env.now))

    # -- the coordinator's interface --------------------------------------------------------

    def advance(
        self,
        until: float,
        inbox: list[Posted],
        online: list[int],
        swarm_round: int | None,
        collect: bool,
    ) -> tuple[list[Posted], Snapshot]:
        """From this boundary to ``until``: round-timed script events first (the monitor's
        order), the window's arrivals queued, then the world runs; returns what it posted.
        Run inside ``quiet`` (``sim.pdes`` does), as ``SimDriver.run`` runs its world."""
        self._snap_online = online
        self._snap_set = frozenset(online)
        if swarm_round is not None:
            self.timeline.on_round(swarm_round)
        if collect:
            gc.collect()
        self._inject(inbox)
        if until > self.env.now:
            self.env.run(until=until)
        out, self._outbox = self._outbox, []
        return out, self.snapshot()

    def snapshot(self) -> Snapshot:
        online = sorted(self._online)
        nodes = self.nodes
        net = self.network
        return Snapshot(
            rounds=[(i, p.round) for i in online if (p := nodes[i].proto) is not None],
            honest=[i for i in online if nodes[i].adversary is None],
            counters={
                "messages": net.sent_messages,
                "bytes": net.sent_bytes,
                "dropped": net.dropped,
                "cancelled": net.cancelled,
                "accepted": self._accepted_total,
                "rejected": self._rejected_total,
            },
            events=self.events,
            wasted_bits=self._take_wasted(),
        )

    def _take_wasted(self) -> dict[int, float]:
        """Bits wasted by cancelled transfers since the last snapshot, per own sender."""
        bulk = self.network.bulk
        taken, bulk.wasted_by_src = bulk.wasted_by_src or {}, {}
        return taken

    def sample(self, nodes: list[int]) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
        """Own nodes of an evaluation sample: their parameter rows and held-out losses (the
        losses also go on their last rounds rows, as ``SimDriver._measure`` does)."""
        losses = self.engine.eval_losses(nodes)
        for i, loss in zip(nodes, losses, strict=True):
            if self.nodes[i].last_row >= 0:
                self.rec.set_eval_loss(self.nodes[i].last_row, loss)
        rows = {}
        for i in nodes:
            learner = self.nodes[i].learner
            assert learner is not None  # the coordinator asks each partition for its own
            rows[i] = learner.parameters()[PARAMS].clone()
        return rows, dict(zip(nodes, losses, strict=True))

    def model_eval(
        self, nodes: list[int], rows: dict[int, torch.Tensor]
    ) -> tuple[float, float, float]:
        """The sample's parameter-average model, from the rows every partition sent (no
        partition holds them all), in the sample's order: the same sums for any K."""
        return self.engine.eval_rows(torch.stack([rows[i] for i in nodes]))

    def tables(self) -> dict[str, pa.Table]:
        """This partition's rounds, rejections and events; world-wide events (no node) only
        from partition 0 (every partition records them)."""
        t = self.rec.tables()
        out = {k: t[k] for k in ("rounds", "rejections", "events")}
        if self.part:
            ev = out["events"]
            out["events"] = ev.filter(pc.not_equal(ev["node"], ""))
        return out

    def describe(self) -> dict[str, Any]:
        """What the run's manifest needs from the world (the same in every partition)."""
        return {
            "run_id": self.run_id,
            "groups": {
                name: [self.nodes[i].id for i in members]
                for name, members in self.groups.members.items()
            },
            "payloads": self.payloads,
            "layer_shards": self.layer_shards,
            "interval": self.s.outputs.monitor_interval
            or min(self.cfg.heartbeat_interval, self.cfg.round_timeout / 4),
            "window": self.window,
            "owners": self.owner,
            "adversaries": {
                n.id: n.adversary.behaviour for n in self.nodes if n.adversary is not None
            },
        }
