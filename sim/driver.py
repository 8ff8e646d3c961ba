"""The SimPy driver: the unmodified protocol core, one ProtocolNode per virtual node.

Why a driver and not a simulation *of* the protocol: the point of the sans-I/O core is that
the code proven here is the code that runs on libp2p. This module only does what the trio
driver does — turn the world into events and execute effects — with virtual time:

* timers    -> one SimPy timeout each; cancel/replace by a version number (a cancelled
               timeout still fires and is ignored: cheaper than removing it from the heap);
* Send      -> ``Network.send`` per peer, then ``commit`` for the burst: control messages
               cost one SimPy event (the arrival), bulk ones share links fairly (one wake-up
               per burst, one arrival each; ``sim.links``); a node's new Contribution for
               round r cancels its transfers of rounds before r-1 still in flight (those
               of r-1 go on: peers still in that round need them, and the real node never
               cancels a send; cancelling them held quorum-1.0 rounds to their timeout in
               calibration); adversaries rewrite outgoing Contributions here; with a
               compute class's ``message_s_per_mb``, a bulk message is encoded on the
               sender's CPU before it leaves and decoded on the receiver's before the core
               sees it (one CPU per node, one message at a time); with its
               ``transport_s_per_mb``, every bulk byte also costs both ends' transport CPU
               while it is in flight (sim/links.py);
* TrainLocal-> the node's modelled compute time, then LocalUpdateReady. Learning is batched:
               requests are collected and run in one ``BatchedLearning.flush`` when the first
               of them is due (a node's parameters do not change between its TrainLocal and
               its result, except a straggler whose round timed out — the core discards that
               result, and its newer request replaces the old one here);
* Apply/Load/ServeState -> the learning engine (the same meaning as ``LearnerBridge``).

SimPy callbacks on bare timeouts are used instead of one process per node: a process costs a
generator resume per event, a callback does not, and event throughput is the whole game at
10,000 nodes. Everything happens in a fixed order (node index order, sorted peers, SimPy's
FIFO tie-break), and every random draw comes from a generator derived from the scenario
seed, so a run is exactly reproducible.
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from heapq import heappop, heapreplace
from typing import Any, Protocol, assert_never

import simpy
import torch
from simpy.core import StopSimulation
from simpy.events import NORMAL

from swarm_tune.runtime.compression.update import UpdateCompressor
from swarm_tune.runtime.protocol import effects as fx
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.events import (
    Event,
    LocalUpdateReady,
    MessageReceived,
    PeerConnected,
    TimerFired,
    TimerKey,
)
from swarm_tune.runtime.protocol.group import DIGEST_BYTES as GROUP_DIGEST_BYTES
from swarm_tune.runtime.protocol.messages import (
    AuditVerdict,
    Contribution,
    Heartbeat,
    Message,
    Piece,
    SliceResult,
    StateResponse,
)
from swarm_tune.runtime.protocol.node import ProtocolNode
from swarm_tune.runtime.protocol.tensors import ModelSpec, Sketch, UpdateKind
from swarm_tune.runtime.training.bridge import LearnerBridge, compress_result, compressor_for
from swarm_tune.runtime.training.layer_shard import LayerShard
from swarm_tune.runtime.training.learner import Learner, LocalResult
from swarm_tune.sim.adversary import Adversary, assign_adversaries
from swarm_tune.sim.bursts import Burst
from swarm_tune.sim.churn import ChurnModel, ComputeModel, node_rng, weighted_pick
from swarm_tune.sim.network import Network, graph_latency_s, latency_matrix_ms_to_s
from swarm_tune.sim.recorder import Recorder
from swarm_tune.sim.scenario import Scenario
from swarm_tune.sim.scripted import Groups, Timeline

SKETCH_BYTES = 8  # per sketch coordinate on the wire (float64)
PEER_ENTRY_BYTES = 48  # one (peer id, address) pair in a peer exchange
GC_EVERY_ROUNDS = 10  # full cyclic-GC passes while the world runs (see SimDriver.run)


class LearningEngine(Protocol):
    """The batched learning API the driver needs (``sim.learning.BatchedLearning``)."""

    spec: ModelSpec

    def add_node(self, node_index: int, shard: int, layer: LayerShard | None = None) -> Learner: ...
    def poison_labels(self, node_index: int) -> None: ...
    def dataset_size(self, node_index: int) -> int: ...
    def request(self, node_index: int, kind: UpdateKind) -> None: ...
    def flush(self) -> dict[int, LocalResult]: ...
    def settle(self) -> None: ...
    def param_digest(self, node_index: int) -> str: ...
    def param_digests(self, node_indices: Sequence[int]) -> list[str]: ...
    def param_sketches(self, node_indices: Sequence[int], size: int, seed: int) -> list[Sketch]: ...
    def payload_bytes(self) -> int: ...
    def eval_losses(self, node_indices: Sequence[int]) -> list[float]: ...
    def mean_eval_loss(self, node_indices: Sequence[int]) -> float: ...
    def mean_eval_accuracy(self, node_indices: Sequence[int]) -> float: ...
    def divergence(self, node_indices: Sequence[int]) -> float: ...
    def eval_rows(self, rows: torch.Tensor) -> tuple[float, float, float]: ...


def make_engine(scenario: Scenario, held: Sequence[int] | None = None) -> LearningEngine:
    """The batched engine for every node, or only for ``held`` (a partition's own nodes)."""
    from swarm_tune.sim.learning import BatchedLearning

    layer_shards = scenario.protocol_config().model_shard_total
    total = scenario.total_nodes
    return BatchedLearning(scenario.learning, total, scenario.seed, layer_shards, held)


@dataclass(slots=True)
class SimNode:
    """Driver-side state of one virtual node (the protocol state lives in ``proto``)."""

    index: int
    id: str
    address: str
    learner: Learner | None  # None: another partition's node (sim/pdes_world.py)
    compute_rng: random.Random | None
    adversary: Adversary | None
    proto: ProtocolNode | None = None
    online: bool = False
    incarnation: int = -1
    last_round: int = 0
    timers: dict[TimerKey, int] = field(default_factory=dict)
    pending: tuple[int, UpdateKind, int] | None = None  # (round, kind, token)
    ready: tuple[int, LocalUpdateReady] | None = None  # (token, result)
    # Per-round accumulators, reset at each RoundClosed.
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    msgs_sent: int = 0
    msgs_recv: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    loss: float = math.nan
    loss_round: int = -1
    digest: str = ""
    drift: float = math.nan
    last_row: int = -1
    # Codec + error-feedback residual (None: the run does not compress). On the node, not
    # on its protocol state: a residual survives a crash and rejoin like the learner does.
    compressor: UpdateCompressor | None = None
    # Whole-run total: copies of its own updates sent (how often a peer averaged one in:
    # ``SimDriver.updates_used``).
    updates_sent: int = 0
    # The node's CPU for bulk messages (compute class message_s_per_mb): busy until then.
    cpu_free_at: float = 0.0


@dataclass(frozen=True, slots=True)
class RunResult:
    recorder: Recorder
    virtual_s: float
    wall_s: float
    events: int
    stop_reason: str
    swarm_round: int
    online: int
    adversaries: dict[str, str]


ProgressFn = Callable[[int, int, float], None]


def quantile_round(rounds: list[int], q: float) -> int:
    """The swarm's round: the one at quantile ``q`` of the sorted, non-empty ``rounds``
    (one world and a partitioned run read it the same way)."""
    return rounds[min(len(rounds) - 1, max(0, math.ceil(q * len(rounds)) - 1))]


def eval_sample(rng: random.Random, honest: list[int], n: int) -> list[int]:
    """The honest nodes evaluated at a tick: all of them, or a seeded sample of ``n``."""
    k = min(len(honest), n)
    return sorted(rng.sample(honest, k)) if k < len(honest) else honest


class SimDriver:
    """Builds the world from a scenario and runs it to the stop condition."""

    def __init__(
        self,
        scenario: Scenario,
        engine: LearningEngine | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.s = scenario
        self.seed = scenario.seed
        self.cfg: ProtocolConfig = scenario.protocol_config()
        self.env = simpy.Environment()
        # Layer shards (runtime/training/layer_shard.py): node i trains slice i % total. The
        # engine slices the model as the runtime does, and each node's protocol state gets
        # the ModelSpec of its learner's tensors (its slice), as node_main builds it. Bytes
        # scale with the slice's share of the whole payload. One swarm per slice: nodes meet
        # (dial, peer exchange) only their own slice's nodes, as each shard's own discovery
        # key and wire run id make it in the runtime.
        self.layer_shards = self.cfg.model_shard_total
        diloco = scenario.learning.diloco
        self._inner_steps = diloco.inner_steps if diloco is not None else 1
        self.control = scenario.links.control_bytes
        self.run_id = f"{scenario.name}-s{scenario.seed}"
        self.rec = Recorder(self.run_id)
        self.progress = progress
        self.flat = self.cfg.view_size == 0
        self.events = 0
        # The network's delivery callback as one bound-method object: ``_loop`` knows the
        # bursts of arrivals it may deliver itself by it (``is``).
        self._deliver = self._on_delivery
        self._token = 0
        self._to_compute: dict[int, UpdateKind] = {}
        self._online: list[int] = []
        self._online_pos: dict[int, int] = {}
        self._rng = random.Random(f"{self.seed}:driver")
        self._eval_rng = random.Random(f"{self.seed}:eval")
        self._accepted_total = 0
        # How often each node's update was in an applied average, its own averages included,
        # and how often in its own (``updates_used``).
        self._used: Counter[str] = Counter()
        self._used_own: Counter[str] = Counter()
        self._rejected_total = 0
        self._stop = self.env.event()
        self._stop_reason = ""
        self._milestone = -1
        self._next_gc = GC_EVERY_ROUNDS
        self._may_freeze = False
        self._wall0 = 0.0
        total = scenario.total_nodes
        width = max(4, len(str(total - 1)))
        self.groups = Groups(scenario)
        self.timeline = Timeline(scenario, self.groups)
        self.compute = ComputeModel(scenario.compute, total, self.seed)
        for i, cls in self.groups.pinned_compute().items():
            self.compute.profiles[i] = replace(self.compute.profiles[i], compute_class=cls)
        pool = [i for i in range(scenario.nodes.count) if i not in self.groups.grouped]
        adv = assign_adversaries(scenario.adversaries, pool, self.seed)
        adv.update(self.groups.adversaries())
        exempt = set(adv) | self.timeline.moved | self.groups.offline_at_start
        self.churn = ChurnModel(scenario.churn, scenario.nodes.count, sorted(exempt), self.seed)
        # Counterfactual runs (an entry's ``absent`` or the scenario's without_adversaries):
        # the would-be attackers never start; every node, shard and per-node draw is kept.
        self._absent = frozenset(
            i for i, a in adv.items() if a.spec.absent or scenario.without_adversaries
        )
        adv = {i: a for i, a in adv.items() if i not in self._absent}
        self._place(adv)
        held = [i for i in range(total) if self._holds(i)]
        if engine is None:
            engine = make_engine(scenario, held if len(held) < total else None)
        self.engine = engine
        self.spec = self.engine.spec  # the whole model's exchanged tensors
        self.network = self._build_network(total)
        learners = {
            i: self.engine.add_node(i, i, LayerShard(self._layer(i), self.layer_shards))
            for i in held
        }
        # Per layer shard: its spec, its (virtual) payload and its raw float32 update bytes.
        self.specs = (
            [self.spec]
            if self.layer_shards == 1
            else [
                ModelSpec.from_tensors(learners[k].parameters()) for k in range(self.layer_shards)
            ]
        )
        whole, payload = _nbytes(self.spec), self.engine.payload_bytes()
        self.payloads = [-(-payload * _nbytes(s) // whole) for s in self.specs]
        self._raws = [4 * s.numel for s in self.specs]
        self.nodes: list[SimNode] = []
        for i in range(total):
            a = adv.get(i)
            address = a.address if a is not None and a.address else None
            address = address or self.groups.address(i) or _honest_address(i)
            self.nodes.append(
                SimNode(
                    index=i,
                    id=f"n{i:0{width}d}",
                    address=address,
                    learner=learners.get(i),
                    compute_rng=node_rng(self.seed, "compute", i) if i in learners else None,
                    adversary=a,
                    compressor=(
                        compressor_for(self.cfg, self.specs[self._layer(i)])
                        if i in learners
                        else None
                    ),
                )
            )
        self._index = {n.id: n.index for n in self.nodes}
        # What a node's peers are told when it connects (immutable, and the same every time:
        # built once per node, not once per connection, of which a flat start makes N^2).
        self._hello = [PeerConnected(n.id, n.address) for n in self.nodes]
        for i, a in adv.items():
            if a.behaviour == "label_flip" and i in learners:
                self.engine.poison_labels(i)
        # Each omniscient coalition once, in adversary order (dicts keep insertion order).
        shared = {id(a.coalition): a.coalition for a in adv.values() if a.coalition.omniscient}
        self._omniscient = list(shared.values())
        self._group_rounds = self.cfg.strategy == "group"

    # -- world construction -----------------------------------------------------------

    def _place(self, adversaries: dict[int, Adversary]) -> None:
        """Hook, before any per-node state is built: a partition decides which nodes are its
        own here (a coalition must stay together)."""

    def _holds(self, idx: int) -> bool:
        """Whether this world holds node ``idx``'s heavy state (learner, compute and codec
        state); a partition holds only its own nodes'."""
        return True

    def _build_network(self, total: int) -> Network:
        topo = self.s.topology
        rng = random.Random(f"{self.seed}:sites")
        if topo.kind == "full":
            latency = [[topo.latency_ms / 1000.0]]
            sites = [0] * total
        elif topo.kind == "regions":
            latency = latency_matrix_ms_to_s(topo.region_latency_ms)
            weights = [r.weight for r in topo.regions]
            sites = [weighted_pick(weights, rng) for _ in range(total)]
        else:
            assert topo.graph is not None
            graph = _load_graph(topo.graph.generator, topo.graph.params, topo.graph.file)
            latency, n_sites = graph_latency_s(graph, topo.graph.hop_latency_ms)
            for k in range(n_sites):  # two nodes at one site still cross a LAN hop
                latency[k][k] = topo.graph.hop_latency_ms / 2000.0
            sites = [rng.randrange(n_sites) for _ in range(total)]
        self.groups.pin_sites(sites)
        self.site_of = sites
        classes = self.s.links.bandwidth
        weights = [c.weight for c in classes]
        ups, downs = [], []
        for i in range(total):
            c = classes[weighted_pick(weights, node_rng(self.seed, "bandwidth", i))]
            ups.append(c.uplink_mbps * 1e6)
            downs.append(c.downlink_mbps * 1e6)
        self.groups.pin_bandwidth(ups, downs)
        return Network(
            self.env,
            sites,
            latency,
            ups,
            downs,
            random.Random(f"{self.seed}:network"),
            self._deliver,
            self.s.links.jitter_ms,
            self.s.links.loss,
            bulk_setup_rtts=self.s.links.bulk_setup_rtts,
            cpu_bps=[self.compute.transport_bps(i) for i in range(total)],
            cpu_shared=self.compute.shared_machines(),
            lead_seed=f"{self.seed}:lead" if self.s.links.bulk_lead_first else None,
        )

    # -- scheduling primitives --------------------------------------------------------

    def _at(self, delay: float, callback: Callable[[simpy.Event], None], value: Any) -> None:
        ev = simpy.Timeout(self.env, max(0.0, delay), value)
        ev.callbacks.append(callback)

    def _feed(self, node: SimNode, event: Event) -> None:
        proto = node.proto
        if proto is None or not node.online:
            return
        self.events += 1
        out = proto.handle(event, self.env.now)
        if out:
            self._execute(node, out)

    def _execute(self, node: SimNode, out: list[fx.Effect]) -> None:
        # Exhaustive: a new effect that is not handled here fails mypy (assert_never), the
        # same contract as the net driver. Most frequent effects first.
        for eff in out:
            match eff:
                case fx.ContributionsAccepted():  # one per close
                    self._fx_accepted(node, eff)
                case fx.Send():
                    self._fx_send(node, eff)
                case fx.SetTimer():
                    self._fx_set_timer(node, eff)
                case fx.CancelTimer():
                    self._fx_cancel_timer(node, eff)
                case fx.TrainLocal():
                    self._fx_train(node, eff)
                case fx.ApplyAverage():
                    self._fx_apply(node, eff)
                case fx.RoundClosed():
                    self._fx_round_closed(node, eff)
                case fx.ContributionRejected():
                    self._fx_rejected(node, eff)
                case fx.DriftObserved():
                    self._fx_drift(node, eff)
                case fx.LoadState():
                    self._fx_load(node, eff)
                case fx.ServeState():
                    self._fx_serve(node, eff)
                case fx.Evict():
                    self._fx_evict(node, eff)
                case fx.Ban():
                    self._fx_ban(node, eff)
                case fx.SyncStarted():
                    self._fx_sync_started(node, eff)
                case fx.SyncFinished():
                    self._fx_sync_finished(node, eff)
                case fx.WaitingForPeers():
                    self.rec.event(self.env.now, "waiting", node.id, value=eff.members)
                case fx.StartedRounds():
                    self.rec.event(self.env.now, "started", node.id, "", eff.reason, eff.round)
                case fx.Dial():
                    self._fx_dial(node, eff)
                case _:
                    assert_never(eff)

    # -- effects ----------------------------------------------------------------------

    def _wire_size(self, node: SimNode, msg: Message) -> int:
        """Bytes of ``msg`` from ``node``: a model's worth is its layer shard's payload."""
        layer = self._layer(node.index)
        payload = self.payloads[layer]
        if isinstance(msg, Contribution):
            if msg.encoded is not None:  # the compressed bytes, scaled to the virtual payload
                return self.control + math.ceil(payload * msg.encoded.nbytes / self._raws[layer])
            return self.control + payload
        if isinstance(msg, Heartbeat):
            return (
                self.control
                + SKETCH_BYTES * len(msg.sketch)
                + PEER_ENTRY_BYTES * len(msg.known_peers)
            )
        if isinstance(msg, StateResponse):
            outer = payload if msg.outer else 0  # DiLoCo momentum: one more model's worth
            moments = 2 * payload if msg.moments is not None else 0  # Adam m and v
            return self.control + payload + outer + moments + SKETCH_BYTES * len(msg.sketch)
        if isinstance(msg, Piece | SliceResult | AuditVerdict):
            return self._group_size(payload, self._raws[layer], msg)
        return self.control

    def _group_size(self, payload: int, raw: int, msg: Piece | SliceResult | AuditVerdict) -> int:
        """A group round's message: its share of the (virtual) payload plus its lists."""
        if isinstance(msg, AuditVerdict):
            floats = sum(int(d.shape[0]) for _, d in msg.evidence)
            return self.control + math.ceil(payload * 4 * floats / raw)
        share = math.ceil(payload * msg.data.nbytes / raw)
        if isinstance(msg, Piece):  # the direction sample goes as it is (~512 floats)
            lists = PEER_ENTRY_BYTES * len(msg.members) + GROUP_DIGEST_BYTES * len(msg.manifest)
            lists += 8 * len(msg.sums) + msg.sample.nbytes + PEER_ENTRY_BYTES * len(msg.votes)
        else:  # (member, weight, digest) per contributor, and every member's commitment
            lists = (PEER_ENTRY_BYTES + 8 + GROUP_DIGEST_BYTES) * len(msg.used)
            lists += GROUP_DIGEST_BYTES * len(msg.commits)
        return self.control + share + lists

    def _fx_send(self, node: SimNode, eff: fx.Send) -> None:
        msg = eff.message
        if node.adversary is not None:
            msg = node.adversary.rewrite(msg, self.cfg.sketch_size, self.cfg.sketch_seed)
        size = self._wire_size(node, msg)
        cost = self._cpu_s(node, size)
        if cost:  # encoded first, on the node's CPU (once for every copy)
            start = max(self.env.now, node.cpu_free_at) + cost
            node.cpu_free_at = start
            self._at(start - self.env.now, self._on_encoded, (node, node.incarnation, eff, msg))
            return
        self._transmit(node, eff.peers, msg, size)

    def _cpu_s(self, node: SimNode, size: int) -> float:
        if size <= self.network.control_max_bytes:
            return 0.0
        return self.compute.message_s_per_mb(node.index) * size / 1e6

    def _on_encoded(self, ev: simpy.Event) -> None:
        node, inc, eff, msg = _payload(ev)
        if node.online and node.incarnation == inc:
            self._transmit(node, eff.peers, msg, self._wire_size(node, msg))

    def _transmit(self, node: SimNode, peers: Sequence[str], msg: Message, size: int) -> None:
        key: int | None = None
        if isinstance(msg, Contribution):
            key = msg.round
            # The real node lets its previous round's sends finish (peers still in that
            # round need them, and a quorum of 1.0 waits for them); older ones are stale.
            self.network.supersede(node.index, key - 1)
            node.updates_sent += len(peers)
        elif isinstance(msg, Piece | SliceResult | AuditVerdict):
            key = msg.round  # bulk, cancelled with the round's other transfers
        src = node.index
        # One immutable event for every receiver of the burst: what each receiver is told
        # (who sent what) is the same, so it is built once, not once per message.
        targets = self._targets(src, peers, MessageReceived(node.id, msg), size)
        node.msgs_sent += len(targets)
        node.bytes_sent += len(targets) * size
        self.network.begin()
        self.network.send_all(src, targets, size, key)
        self.network.commit()

    def _targets(
        self, src: int, peers: Sequence[str], received: MessageReceived, size: int
    ) -> list[tuple[int, tuple[int, float, int, MessageReceived, int]]]:
        """(receiver, delivery value) per known peer; the value names the receiver's life
        at send time (a message to a previous life is dropped on arrival)."""
        index, nodes = self._index, self.nodes
        return [
            (dst, (dst, nodes[dst].incarnation, src, received, size))
            for dst in [index.get(peer) for peer in peers]
            if dst is not None
        ]

    def _on_delivery(self, ev: simpy.Event) -> None:
        """An arrival delivered by SimPy (a world run by ``env.run``: a partition's, a test's).
        ``_loop`` writes this out for the bursts it delivers itself: change both together
        (test_sim_run's determinism test runs one world each way and compares the tables)."""
        dst, inc, src, received, size = ev._value  # _payload, inlined: once per message
        node = self.nodes[dst]
        if not node.online or node.incarnation != inc or not self.network.reachable(src, dst):
            return
        node.msgs_recv += 1
        node.bytes_recv += size
        cost = self._cpu_s(node, size) if size > self.network.control_max_bytes else 0.0
        if cost:  # decoded and validated on the node's CPU before the core sees it
            start = max(self.env.now, node.cpu_free_at) + cost
            node.cpu_free_at = start
            self._at(start - self.env.now, self._on_decoded, (node, inc, src, received))
            return
        self._handle_received(node, received)

    def _on_decoded(self, ev: simpy.Event) -> None:
        node, inc, src, received = _payload(ev)
        if node.online and node.incarnation == inc and self.network.reachable(src, node.index):
            self._handle_received(node, received)

    def _handle_received(self, node: SimNode, received: MessageReceived) -> None:
        proto = node.proto
        if proto is None:
            return
        self.events += 1
        out = proto.handle(received, self.env.now)
        if out:
            self._execute(node, out)

    def _fx_set_timer(self, node: SimNode, eff: fx.SetTimer) -> None:
        self._token += 1
        node.timers[eff.key] = self._token
        self._at(
            eff.at - self.env.now,
            self._on_timer,
            (node.index, node.incarnation, eff.key, self._token),
        )

    def _fx_cancel_timer(self, node: SimNode, eff: fx.CancelTimer) -> None:
        node.timers.pop(eff.key, None)

    def _on_timer(self, ev: simpy.Event) -> None:
        idx, inc, key, token = _payload(ev)
        node = self.nodes[idx]
        if node.incarnation != inc or node.timers.get(key) != token:
            return  # cancelled, replaced, or from a previous life
        del node.timers[key]
        self._feed(node, TimerFired(key))

    def _fx_train(self, node: SimNode, eff: fx.TrainLocal) -> None:
        self._token += 1
        node.pending = (eff.round, eff.kind, self._token)
        node.ready = None
        self._to_compute[node.index] = eff.kind
        assert node.compute_rng is not None
        delay = self.compute.step_time(node.index, node.compute_rng)
        if eff.kind == "grad":
            delay *= self._inner_steps  # a DiLoCo round is H real local steps
        self._at(delay, self._on_compute_done, (node.index, node.incarnation, self._token))

    def _on_compute_done(self, ev: simpy.Event) -> None:
        idx, inc, token = _payload(ev)
        node = self.nodes[idx]
        if node.incarnation != inc or node.pending is None or node.pending[2] != token:
            return
        if node.ready is None or node.ready[0] != token:
            self._flush()
        ready = node.ready
        node.pending = node.ready = None
        if ready is None or ready[0] != token:
            return
        result = ready[1]
        node.loss, node.loss_round = result.loss, result.round
        node.digest = result.digest[:16]
        self._feed(node, result)

    def _flush(self) -> None:
        """Run every collected local step in one batched call (see module docstring)."""
        work = sorted(self._to_compute.items())
        self._to_compute = {}
        if not work:
            return
        nodes = [i for i, _ in work]
        eng = self.engine
        eng.settle()  # apply queued averages in one batched step, not one per digest read
        digests = eng.param_digests(nodes)
        sketches = eng.param_sketches(nodes, self.cfg.sketch_size, self.cfg.sketch_seed)
        for i, kind in work:
            eng.request(i, kind)
        results = eng.flush()
        for pos, (i, kind) in enumerate(work):
            node = self.nodes[i]
            if node.pending is None:
                continue
            rnd, _, token = node.pending
            res = results[i]
            update, encoded = compress_result(node.compressor, kind, res.update)
            if self._omniscient:
                self._show_to_coalitions(node, rnd, kind, update)
            if node.adversary is not None and self._group_rounds:
                # Group rounds slice the update in the core: craft it before (adversary.py).
                update, encoded = node.adversary.craft_update(rnd, kind, update), None
            node.ready = (
                token,
                LocalUpdateReady(rnd, kind, update, res.loss, digests[pos], sketches[pos], encoded),
            )

    def _show_to_coalitions(
        self, node: SimNode, rnd: int, kind: UpdateKind, update: dict[str, torch.Tensor]
    ) -> None:
        """Omniscient attackers see every honest update of a round as it is computed."""
        if node.adversary is None:
            for coalition in self._omniscient:
                coalition.observe(rnd, kind, node.id, update)
        elif node.adversary.coalition.omniscient:
            node.adversary.coalition.observe(rnd, kind, node.id, update, own=True)

    def _fx_apply(self, node: SimNode, eff: fx.ApplyAverage) -> None:
        assert node.learner is not None  # effects come from a held node's core
        node.learner.apply_average(eff.kind, eff.update)
        if not eff.fallback:  # counted in C: a flat round applies N^2 contributions
            self._used.update(eff.contributors)
            if node.id in eff.contributors:
                self._used_own[node.id] += 1

    def updates_used(self, idx: int) -> int:
        """How often a peer averaged node ``idx``'s update in, over the run so far."""
        node_id = self.nodes[idx].id
        return self._used[node_id] - self._used_own[node_id]

    def _fx_load(self, node: SimNode, eff: fx.LoadState) -> None:
        assert node.learner is not None
        LearnerBridge(node.learner, self.cfg).load(eff)
        self.rec.event(self.env.now, "load_state", node.id, value=eff.round)

    def _fx_serve(self, node: SimNode, eff: fx.ServeState) -> None:
        assert node.proto is not None and node.learner is not None
        resp = LearnerBridge(node.learner, self.cfg).state_response(eff, node.proto.round)
        self._fx_send(node, fx.Send((eff.peer,), resp))

    def _fx_dial(self, node: SimNode, eff: fx.Dial) -> None:
        """The core asked to (re)connect: it succeeds when the peer is up and reachable
        (not partitioned off), as a real dial would; the hint is not needed here."""
        dst = self._index.get(eff.peer)
        if dst is None:
            return
        other = self.nodes[dst]
        if other.online and other.proto is not None and self.network.reachable(node.index, dst):
            self._connect(node, other)

    def _fx_evict(self, node: SimNode, eff: fx.Evict) -> None:
        self.rec.event(self.env.now, "evict", node.id, eff.peer, eff.reason)

    def _fx_ban(self, node: SimNode, eff: fx.Ban) -> None:
        self.rec.event(self.env.now, "ban", node.id, eff.peer, value=eff.until)

    def _fx_accepted(self, node: SimNode, eff: fx.ContributionsAccepted) -> None:
        node.accepted += len(eff.peers)
        self._accepted_total += len(eff.peers)

    def _fx_rejected(self, node: SimNode, eff: fx.ContributionRejected) -> None:
        reason = eff.reason.value
        node.rejected[reason] = node.rejected.get(reason, 0) + 1
        self._rejected_total += 1
        self.rec.rejection(self.env.now, node.id, eff.round, eff.peer, reason)

    def _fx_round_closed(self, node: SimNode, eff: fx.RoundClosed) -> None:
        node.last_row = self.rec.add_round(
            (
                node.index,
                node.incarnation,
                eff.round,
                eff.contributors,
                node.accepted,
                node.msgs_sent,
                node.msgs_recv,
                node.bytes_sent,
                node.bytes_recv,
            ),
            node.rejected,
            (
                eff.opened_at,
                eff.closed_at,
                eff.closed_at - eff.opened_at,
                node.loss if node.loss_round == eff.round else math.nan,
                node.drift,
            ),
            (
                node.id,
                eff.trigger,
                eff.outcome,
                node.digest,
                node.adversary.behaviour if node.adversary else "",
            ),
        )
        node.accepted = 0
        node.rejected = {}
        node.msgs_sent = node.msgs_recv = node.bytes_sent = node.bytes_recv = 0

    def _fx_drift(self, node: SimNode, eff: fx.DriftObserved) -> None:
        node.drift = eff.distance

    def _fx_sync_started(self, node: SimNode, eff: fx.SyncStarted) -> None:
        self.rec.event(self.env.now, "sync_start", node.id, detail=eff.reason, value=len(eff.asked))

    def _fx_sync_finished(self, node: SimNode, eff: fx.SyncFinished) -> None:
        detail = "ok" if eff.ok else "failed"
        self.rec.event(self.env.now, "sync_done", node.id, detail=detail, value=eff.round)

    # -- membership: start, join, leave -------------------------------------------------

    def _set_online(self, idx: int, online: bool) -> None:
        if online:
            self._online_pos[idx] = len(self._online)
            self._online.append(idx)
        else:
            pos = self._online_pos.pop(idx)
            last = self._online.pop()
            if last != idx:
                self._online[pos] = last
                self._online_pos[last] = pos

    def _bring_up(self, node: SimNode, start_round: int) -> None:
        node.incarnation += 1
        node.online = True
        node.timers = {}
        node.pending = node.ready = None
        node.proto = ProtocolNode(
            node.id,
            self.cfg,
            self.specs[self._layer(node.index)],
            self.engine.dataset_size(node.index),
            node_rng(self.seed, f"proto{node.incarnation}", node.index),
            start_round=start_round,
            address=node.address,
        )
        self._set_online(node.index, True)

    def _connect(self, a: SimNode, b: SimNode) -> None:
        """Both ends learn of each other; a simulated peer is a verified member at once (the
        sim has no other runs to tell apart), which is half of the core's handshake."""
        assert a.proto is not None and b.proto is not None
        if self.layer_shards > 1 and not self._same_shard(a.index, b.index):
            return  # another layer shard: another swarm
        now = self.env.now
        self._execute(a, a.proto.handle(self._hello[b.index], now))
        self._execute(b, b.proto.handle(self._hello[a.index], now))

    def _layer(self, i: int) -> int:
        """Node ``i``'s layer shard: dealt round-robin, as ``join`` deals them out."""
        return i % self.layer_shards

    def _same_shard(self, a: int, b: int) -> bool:
        return self._layer(a) == self._layer(b)

    def _dial(self, node: SimNode) -> None:
        """Connect a (re)joining node: to everyone (flat) or to a few random peers."""
        me = node.index
        if self.layer_shards == 1:  # one swarm (the usual case): no shard test per node
            others = [i for i in self._online if i != me]
        else:
            others = [i for i in self._online if i != me and self._same_shard(i, me)]
        if not self.flat:
            k = min(len(others), self.s.rounds.bootstrap_peers)
            others = self._rng.sample(others, k)
        for i in sorted(others):
            self._connect(node, self.nodes[i])

    def _join(self, idx: int, kind: str) -> None:
        node = self.nodes[idx]
        if node.online:
            return
        self._bring_up(node, node.last_round)
        self._dial(node)
        self.rec.event(self.env.now, kind, node.id, value=node.last_round)
        assert node.proto is not None
        self._execute(node, node.proto.start(self.env.now, catch_up=True))

    def _leave(self, idx: int, crash: bool) -> None:
        node = self.nodes[idx]
        if not node.online or node.proto is None:
            return
        node.last_round = node.proto.round
        if not crash:
            self._execute(node, node.proto.stop(self.env.now))
        node.online = False
        self.network.disconnect(idx)
        # The dead process's protocol state is never read again (a rejoin builds a new one):
        # drop it now, or thousands of offline nodes pin their buffered contributions (views
        # into whole batched-gradient chunks), peer tables and reputations for the whole run.
        node.proto = None
        node.timers = {}
        node.pending = node.ready = None
        self._to_compute.pop(idx, None)
        self._set_online(idx, False)
        self.rec.event(self.env.now, "crash" if crash else "leave", node.id, value=node.last_round)

    def _churn_process(self, idx: int) -> Any:
        ch = self.churn
        yield self.env.timeout(ch.first_session(idx))
        while True:
            self._leave(idx, ch.crashes(idx))
            yield self.env.timeout(ch.offline(idx))
            self._join(idx, "rejoin")
            yield self.env.timeout(ch.session(idx))

    def _joiner(self, idx: int, at: float) -> Any:
        yield self.env.timeout(at)
        self._join(idx, "join")

    def _partition_process(self, k: int) -> Any:
        part = self.s.partitions[k]
        yield self.env.timeout(part.at)
        total = len(self.nodes)
        if part.fraction is not None:
            rng = random.Random(f"{self.seed}:partition{k}")
            cut = set(rng.sample(range(total), round(part.fraction * total)))
            groups = [1 if i in cut else 0 for i in range(total)]
        else:
            names = [r.name for r in self.s.topology.regions]
            label = {names.index(r): g for g, grp in enumerate(part.groups) for r in grp}
            rest = len(part.groups)
            groups = [label.get(self.site_of[i], rest) for i in range(total)]
        self.network.partition(groups)
        self.rec.event(self.env.now, "partition_open", "", detail=str(k), value=part.heal)
        yield self.env.timeout(part.heal - part.at)
        self.network.heal()
        self.rec.event(self.env.now, "partition_heal", "", detail=str(k))

    # -- monitoring and the stop condition --------------------------------------------

    def _swarm_round(self) -> int:
        rounds = sorted(p.round for i in self._online if (p := self.nodes[i].proto) is not None)
        if not rounds:
            return self._milestone
        return quantile_round(rounds, self.s.rounds.quantile)

    def _measure(self, r: int, swarm_round: int) -> None:
        honest = sorted(i for i in self._online if self.nodes[i].adversary is None)
        row: dict[str, Any] = {
            "round": r,
            "t": self.env.now,
            "wall_s": time.perf_counter() - self._wall0,
            "online": len(self._online),
            "median_round": swarm_round,
            "messages": self.network.sent_messages,
            "bytes": self.network.sent_bytes,
            "dropped": self.network.dropped,
            "cancelled": self.network.cancelled,
            "cancelled_bytes": self.network.cancelled_bytes,
            "accepted": self._accepted_total,
            "rejected": self._rejected_total,
        }
        final = swarm_round >= self.s.rounds.target
        if honest and (r % self.s.outputs.eval_every == 0 or final):
            sample = eval_sample(self._eval_rng, honest, self.s.outputs.eval_sample)
            losses = self.engine.eval_losses(sample)
            for i, loss in zip(sample, losses, strict=True):
                if self.nodes[i].last_row >= 0:
                    self.rec.set_eval_loss(self.nodes[i].last_row, loss)
            row["eval_loss_mean_model"] = self.engine.mean_eval_loss(sample)
            row["eval_acc_mean_model"] = self.engine.mean_eval_accuracy(sample)
            row["eval_loss_median"] = sorted(losses)[len(losses) // 2]
            row["divergence"] = self.engine.divergence(sample)
        self.rec.swarm_row(row)

    def _monitor(self) -> Any:
        interval = self.s.outputs.monitor_interval or min(
            self.cfg.heartbeat_interval, self.cfg.round_timeout / 4
        )
        target = self.s.rounds.target
        while True:
            current = self._swarm_round()
            if current > self._milestone:
                for r in range(self._milestone + 1, min(current, target) + 1):
                    self._measure(r, current)
                self._milestone = current
                if current >= self._next_gc:
                    # Frozen afterwards: the next pass only walks what is newer (a full pass
                    # over a 10,000-node world costs ~1 s).
                    gc.collect()
                    if self._may_freeze:
                        gc.freeze()
                    self._next_gc = current + GC_EVERY_ROUNDS
                if self.progress is not None:
                    self.progress(min(current, target), target, self.env.now)
            self.timeline.on_round(current)
            if current >= target:
                self._finish("target_round")
                return
            yield self.env.timeout(interval)

    def _deadline(self) -> Any:
        yield self.env.timeout(self.s.rounds.max_virtual_time)
        self._measure(max(self._milestone, 0), self._swarm_round())
        self._finish("max_virtual_time")

    def _finish(self, reason: str) -> None:
        if not self._stop.triggered:
            self._stop_reason = reason
            self._stop.succeed()

    # -- run ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        # The tensors here are tiny: torch's intra-op thread pool only adds synchronisation
        # (20x slower on a loaded 2-core box, measured). One thread, restored afterwards.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        # Millions of short-lived events, effects and messages are freed by refcounting, and
        # the world forms no reference cycles (a test checks that nothing is left for the
        # cyclic GC), so its automatic passes only traversed live objects for nothing: 15% of
        # a 10,000-node run even with a raised threshold (8 of 53 s, measured). Off while the
        # world runs; ``_monitor`` still collects every GC_EVERY_ROUNDS rounds, so a cycle
        # introduced by later code costs memory for a while, not forever.
        gc_was_enabled = gc.isenabled()
        # Freezing is ours to undo only if nothing was frozen before (a caller's own frozen
        # objects must stay frozen): otherwise collections just walk everything.
        self._may_freeze = gc.get_freeze_count() == 0
        gc.disable()
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)
            if self._may_freeze:
                gc.unfreeze()
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> RunResult:
        self._wall0 = time.perf_counter()
        env = self.env
        initial = self.s.nodes.count
        waiting = self._absent | self.groups.offline_at_start
        starters = [i for i in range(initial) if i not in waiting]
        for i in starters:
            self._bring_up(self.nodes[i], 0)
        self._measure(0, 0)
        self._milestone = 0
        self._initial_connections(initial)
        for i in starters:
            node = self.nodes[i]
            assert node.proto is not None
            self._execute(node, node.proto.start(0.0, catch_up=self.s.nodes.start_sync))
        self.timeline.start(self, self._absent)
        for i in self.churn.churners:
            env.process(self._churn_process(i))
        for at, idx in self.churn.joiner_times(initial):
            env.process(self._joiner(idx, at))
        for k in range(len(self.s.partitions)):
            env.process(self._partition_process(k))
        env.process(self._monitor())
        if math.isfinite(self.s.rounds.max_virtual_time):
            env.process(self._deadline())
        self._loop()
        wall = time.perf_counter() - self._wall0
        advs: dict[str, str] = {
            n.id: n.adversary.behaviour for n in self.nodes if n.adversary is not None
        }
        return RunResult(
            self.rec,
            env.now,
            wall,
            self.events,
            self._stop_reason,
            self._milestone,
            len(self._online),
            advs,
        )

    def _loop(self) -> None:
        """``env.run(until=self._stop)``, with the network's arrivals delivered in the loop.

        Why: a flat round at N nodes is N^2 arrivals, and through SimPy each one passed five
        Python frames before the core saw it (``step``, the burst's ``_fire`` and ``_push``,
        ``_on_delivery``, ``_handle_received``): ~3 us of a ~17 us event at 1,000 nodes
        (py-spy). Here an arrival of a ``Burst`` that carries ``_on_delivery`` is popped, its
        burst's next arrival takes its place in the heap (one sift, not a pop and a push:
        the ids are unique, so the heap's order is total and the same entries come out in
        the same order) and the delivery is made in one loop body; every other event
        takes ``Environment.step``'s path, written out. It is SimPy's own order (one heap of
        (time, priority, id) entries), so every event fires at the same time and in the same
        order as under ``env.run``: the tables are the same bit for bit. Two rules follow:
        the inline body is this class's ``_on_delivery`` / ``_handle_received``, so a
        subclass that overrides those overrides ``_loop`` too (``PartWorld`` runs
        ``env.run``); and, unlike ``env.run``, the stop event is not re-armed, so a world is
        not resumed after it returns (none is)."""
        env = self.env
        queue: list[Any] = env._queue  # SimPy's private heap, as sim/bursts.py uses it
        stop = self._stop
        stop.callbacks.append(StopSimulation.callback)
        deliver = self._deliver
        nodes, net = self.nodes, self.network
        control_max = net.control_max_bytes
        events = 0
        try:
            while True:
                if not queue:
                    raise RuntimeError(f"no events left before the stop event: {stop}")
                now, _, _, ev = queue[0]
                env._now = now
                if ev.__class__ is not Burst or ev._deliver is not deliver:
                    heappop(queue)
                    callbacks, ev.callbacks = ev.callbacks, None
                    for callback in callbacks:
                        callback(ev)
                    if not ev._ok and not hasattr(ev, "_defused"):
                        exc = type(ev._value)(*ev._value.args)
                        exc.__cause__ = ev._value
                        raise exc
                    continue
                # One arrival of a burst: Burst._fire and _push, then _on_delivery and
                # _handle_received written out (called instead, with their reachable() and
                # env.now calls: +12.7% instructions, callgrind, flower-task flat 120 x 2).
                items = ev._items
                k = ev._next + 1
                dst, inc, src, received, size = items[k - 1][2]
                if k < len(items):  # the next arrival takes this one's place: one sift
                    ev._next = k
                    at, eid, value = items[k]
                    ev._value = value
                    heapreplace(queue, (at, NORMAL, eid, ev))
                else:  # its last arrival: nothing refers to the burst any more
                    heappop(queue)
                    ev._items = []
                    ev._callbacks = ev.callbacks = None
                node = nodes[dst]
                if not node.online or node.incarnation != inc:
                    continue
                if net._group is not None and not net.reachable(src, dst):
                    continue
                node.msgs_recv += 1
                node.bytes_recv += size
                if size > control_max and (cost := self._cpu_s(node, size)):
                    start = max(now, node.cpu_free_at) + cost
                    node.cpu_free_at = start
                    self._at(start - now, self._on_decoded, (node, inc, src, received))
                    continue
                proto = node.proto
                if proto is None:
                    continue
                events += 1
                out = proto.handle(received, now)
                if out:
                    self._execute(node, out)
        except StopSimulation:
            return
        finally:
            self.events += events

    def _initial_connections(self, initial: int) -> None:
        nodes = self.nodes
        for a, b in self._initial_pairs(initial, lambda i: nodes[i].online):
            self._connect(nodes[a], nodes[b])

    def _initial_pairs(self, initial: int, up: Callable[[int], bool]) -> Iterator[tuple[int, int]]:
        """The start's connections in order: all pairs (flat) or each node's sample."""
        if self.flat:
            started = [i for i in range(initial) if up(i)]
            for j, a in enumerate(started):
                for b in started[j + 1 :]:
                    yield a, b
            return
        # Every node draws its sample whether or not it started: the draws stay the same.
        k = min(initial - 1, self.s.rounds.bootstrap_peers)
        for a in range(initial):
            for b in sorted(self._rng.sample(range(initial - 1), k)):
                peer = b if b < a else b + 1
                if up(a) and up(peer):
                    yield a, peer

    # -- the script's interface (sim.scripted.World) -----------------------------------

    def leave(self, idx: int, crash: bool) -> None:
        self._leave(idx, crash)

    def join(self, idx: int, kind: str) -> None:
        self._join(idx, kind)


def _nbytes(spec: ModelSpec) -> int:
    return sum(math.prod(t.shape) * t.dtype.itemsize for _, t in spec.tensors)


def _payload(ev: simpy.Event) -> Any:
    return ev._value  # set at construction; the public property re-checks state we know


def _honest_address(i: int) -> str:
    """One /24 per honest node (10.x.y.0/24, then 11.x.y.0/24, ...)."""
    return f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.{1 + i % 250}"


def _load_graph(generator: str | None, params: dict[str, Any], file: str | None) -> Any:
    import networkx as nx

    if file is not None:
        return nx.read_graphml(file)
    assert generator is not None
    fn = getattr(nx, generator, None)
    if fn is None or not callable(fn):
        raise ValueError(f"networkx has no generator {generator!r}")
    return fn(**params)
