"""``NodeDriver``: the trio + libp2p driver of one real node around the sans-I/O core.

The core (``ProtocolNode``) decides; this module only moves bytes, keeps time and runs the
learner. Its shape follows from three rules:

1. **One place feeds the core.** Every event (decoded message, peer change, timer, finished
   training step) goes through ``_feed``, a plain synchronous method: trio is cooperative, so
   ``handle`` plus the dispatch of its effects is atomic and the core sees one totally ordered
   event stream — the same discipline as the SimPy driver. ``now`` is ``trio.current_time()``.
2. **Nothing slow runs on the event loop.** Sends are tasks (one per peer, bounded by
   timeouts; a failure is logged and counted, the round timeout covers the loss). Learning
   effects go to one worker task that executes them *in order* in a thread
   (``trio.to_thread.run_sync``): ``ApplyAverage(r)`` must finish before ``TrainLocal(r+1)``
   starts, ``ServeState`` must not snapshot half-applied parameters, and checkpoints must see
   a consistent model. Large encodes/decodes also run in a thread.
3. **The driver reports facts; the core decides.** A libp2p connection is fed as an
   *unverified* ``PeerConnected`` (an identity, not membership of this run: relays, DHT
   neighbours and other runs connect too); the core answers with its hello and admits the
   peer with its first message that decodes and verifies here (signature, run id, replay
   window, signer == transport peer). Bans, readiness to start (WAITING_FOR_PEERS),
   staleness of a queued TrainLocal and campaign progress are asked of the core too; no
   list or threshold of its own lives here. Bad bytes become ``WireRejected`` and a
   counter, never an exception.

Every task lives in the driver's nursery; ``run`` returns only after a clean shutdown
(Goodbye sent, final checkpoint written under a shielded cancel scope).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

import trio

from swarm_tune.runtime.net.adversary import Adversary
from swarm_tune.runtime.net.buffers import AverageBuffers, BufferPool
from swarm_tune.runtime.net.discovery import add_peers, announce_and_find
from swarm_tune.runtime.net.errors import NetError
from swarm_tune.runtime.net.events import Incoming, PeerMisbehaved
from swarm_tune.runtime.net.events import PeerConnected as NetPeerConnected
from swarm_tune.runtime.net.events import PeerDisconnected as NetPeerDisconnected
from swarm_tune.runtime.net.heap import keep_freed_memory
from swarm_tune.runtime.net.metrics import NodeMetrics
from swarm_tune.runtime.net.node import NetNode
from swarm_tune.runtime.net.protocol_codec import from_envelope, to_envelope
from swarm_tune.runtime.net.timers import TimerService
from swarm_tune.runtime.net.workers import WorkerPool
from swarm_tune.runtime.ops.logging import get_logger
from swarm_tune.runtime.protocol import effects as fx
from swarm_tune.runtime.protocol.events import (
    Event,
    LocalUpdateReady,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    PeersFound,
    SendFailed,
    TimerFired,
    WireRejected,
)
from swarm_tune.runtime.protocol.group import with_facts
from swarm_tune.runtime.protocol.messages import (
    Contribution,
    GroupMessage,
    Heartbeat,
    Message,
    Piece,
    SliceResult,
    StateResponse,
)
from swarm_tune.runtime.protocol.node import ProtocolNode
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.rounds import Phase
from swarm_tune.runtime.training.bridge import LearnerBridge
from swarm_tune.runtime.wire.codec import decode, encode, encode_buffer
from swarm_tune.runtime.wire.errors import (
    BadSignature,
    Oversized,
    Replay,
    SenderMismatch,
    WireError,
    WrongRun,
)
from swarm_tune.runtime.wire.identity import Identity
from swarm_tune.runtime.wire.replay import ReplayGuard

if TYPE_CHECKING:
    from swarm_tune.runtime.net.monitor import DriverObserver

log = get_logger(__name__)

#: Encode/decode messages larger than this in a worker thread (keeps the loop responsive).
THREAD_CODEC_BYTES = 1 << 20
#: What the reused send buffers may keep between messages: a 124 MB update's round at
#: N = 4 has ~5 slices in flight at once (pieces, slice, audit piece).
SEND_BUFFERS_BYTES = 1 << 30
ATTACKER_POLL_S = 0.05  # how often a waiting omniscient attacker looks at what it received

CheckpointFn = Callable[[int, dict[str, Any]], Path | None]


@dataclass(frozen=True, slots=True)
class DriverConfig:
    run_id: str
    max_rounds: int = 0  # stop once this many rounds are done (by round number); 0 = never
    checkpoint_every: int = 0  # rounds; 0 = only the final checkpoint
    bootstrap: tuple[str, ...] = ()  # re-dialled while not connected
    join_timeout: float = 30.0  # wait this long for peers before starting alone
    redial_interval: float = 5.0
    send_timeout: float = 60.0  # on top of the net layer's own per-transfer deadline
    discovery_interval: float = 30.0  # DHT: re-announce and look up this run's members


def wire_reason(err: WireError) -> RejectReason:
    """The core's reputation category of a wire-level rejection."""
    if isinstance(err, (BadSignature, SenderMismatch)):
        return RejectReason.BAD_SIGNATURE
    if isinstance(err, WrongRun):
        return RejectReason.WRONG_RUN
    if isinstance(err, Replay):
        return RejectReason.REPLAY
    if isinstance(err, Oversized):
        return RejectReason.OVERSIZED
    return RejectReason.MALFORMED


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    final: bool


@dataclass(frozen=True, slots=True)
class _Evaluate:
    tag: str


_Job = fx.TrainLocal | fx.ApplyAverage | fx.LoadState | fx.ServeState | _Checkpoint | _Evaluate


class NodeDriver:
    """Runs one ``ProtocolNode`` on a ``NetNode`` with a ``LearnerBridge``; see module doc."""

    def __init__(
        self,
        protocol: ProtocolNode,
        net: NetNode,
        bridge: LearnerBridge,
        identity: Identity,
        config: DriverConfig,
        *,
        checkpoint: CheckpointFn | None = None,
        adversary: Adversary | None = None,
        metrics: NodeMetrics | None = None,
        applied_round: int | None = None,
    ) -> None:
        if identity.peer_id != net.peer_id:
            raise ValueError("the signing identity must be the libp2p identity")
        self.protocol = protocol
        self.net = net
        self.bridge = bridge
        self.identity = identity
        self.config = config
        self.metrics = metrics or NodeMetrics()
        # One counter, two readers: the net layer counts refusals, /metrics shows them.
        self.metrics.net_refused = net.refusals.counts
        # Members' contributions before strangers' offers on the bulk plane.
        net.prioritise(self._is_member)
        self._checkpoint_fn = checkpoint
        self._adversary = adversary or Adversary("none")
        self._replay = ReplayGuard()
        # Large encodes, decodes and group-data checks: a few threads started with ``run``,
        # before any traffic, never by the loop's thread mid-round (see workers.py).
        self._workers = WorkerPool()
        self._send_buffers = BufferPool(SEND_BUFFERS_BYTES)
        self._averages = AverageBuffers()
        protocol.average_out = self._averages.take
        self._timers = TimerService(self._on_timer)
        self._jobs_send, self._jobs_recv = trio.open_memory_channel[_Job](math.inf)
        self._nursery: trio.Nursery | None = None
        self._done = trio.Event()  # max_rounds reached
        self._worker_idle = trio.Event()
        self._final_written = trio.Event()
        self._stopping = False
        # Sends still on their way (every message but heartbeats): a node that completed its
        # campaign lets them finish before its Goodbye (see _drain_sends).
        self._sends_in_flight = 0
        self._send_finished = trio.Event()
        #: Rounds whose result the learner's parameters already reflect (next to apply).
        self.applied_round = protocol.round if applied_round is None else applied_round
        self.final_checkpoint: Path | None = None
        self.eval_losses: dict[str, float] = {}
        #: Metrics/dashboard hooks (net.monitor.NodeMonitor); set before ``run``.
        self.observer: DriverObserver | None = None
        self._loop_cpu0 = time.thread_time()  # event-loop CPU at the last round close
        self._proc_cpu0 = time.process_time()  # the whole process's (every thread's), ditto

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: trio.Event) -> None:
        """Join, train until ``stop`` is set or ``max_rounds`` is reached, leave cleanly."""
        keep_freed_memory()  # a round's big arrays reuse the last round's memory (heap.py)
        self._workers.start()
        try:
            await self._run(stop)
        finally:
            self._workers.close()

    async def _run(self, stop: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timers.run)
            nursery.start_soon(self._incoming_loop)
            nursery.start_soon(self._peer_event_loop)
            nursery.start_soon(self._learner_worker)
            nursery.start_soon(self._redial_loop)
            if "dht" in self.net.services:
                nursery.start_soon(self._discovery_loop, self.net.services["dht"])
            self._jobs_send.send_nowait(_Evaluate("start"))
            await self._wait_for_bootstrap(stop)
            if not stop.is_set():
                log.info("node.start", round=self.protocol.round, peers=self.protocol.members() - 1)
                # The core decides readiness (WAITING_FOR_PEERS until min_peers members or
                # start_deadline) and whether to catch up first (only if peers are there).
                now = trio.current_time()
                dialled = self.net.bootstrapped  # wait for these to speak, as the core decides
                self._execute(self.protocol.start(now, catch_up=True, expected=dialled))
                async with trio.open_nursery() as waiters:
                    for ev in (stop, self._done):
                        waiters.start_soon(_set_then_cancel, ev, waiters.cancel_scope)
            await self._shutdown(stop)
            nursery.cancel_scope.cancel()

    async def _wait_for_bootstrap(self, stop: trio.Event) -> None:
        """Let the first dials finish (bounded by join_timeout): a transport matter only;
        readiness to count rounds is the core's (ProtocolNode.start)."""
        with trio.move_on_after(self.config.join_timeout):
            async with trio.open_nursery() as waiters:
                waiters.start_soon(_set_then_cancel, stop, waiters.cancel_scope)
                await self.net.bootstrap_done.wait()
                waiters.cancel_scope.cancel()

    async def _drain_sends(self, stop: trio.Event) -> None:
        """The campaign is complete: let the sends on their way finish before leaving.

        The last round closes here as soon as the peers' contributions are in, often before
        ours has reached them; leaving at once cut it off mid-transfer, and each peer then
        waited for its round's timeout (seen at 1% loss in the netns twin). The core is
        already stopped, so no new send joins them. Bounded by one round timeout (no peer
        waits longer for us) and by ``stop`` (an operator's signal still ends the node)."""
        started, pending = trio.current_time(), self._sends_in_flight
        with trio.move_on_after(self.protocol.config.round_timeout):
            async with trio.open_nursery() as waiters:
                waiters.start_soon(_set_then_cancel, stop, waiters.cancel_scope)
                while self._sends_in_flight:
                    await self._send_finished.wait()
                waiters.cancel_scope.cancel()
        if pending:
            waited = round(trio.current_time() - started, 3)
            log.info("node.drained", sends=pending, left=self._sends_in_flight, seconds=waited)

    async def _shutdown(self, stop: trio.Event) -> None:
        """Abandon the open round, say Goodbye, write the final checkpoint (shielded)."""
        self._stopping = True
        now = trio.current_time()
        log.info("node.stopping", round=self.protocol.round, applied_round=self.applied_round)
        # The core stops first: no round opens or closes while the last sends drain.
        goodbyes = [e for e in self.protocol.stop(now) if isinstance(e, fx.Send)]
        if self._done.is_set() and not stop.is_set():
            await self._drain_sends(stop)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.net.config.control_timeout):
                async with trio.open_nursery() as n:
                    for eff in goodbyes:
                        n.start_soon(self._send, eff)
            self._jobs_send.send_nowait(_Evaluate("final"))
            self._jobs_send.send_nowait(_Checkpoint(final=True))
            await self._final_written.wait()
        log.info(
            "node.stopped",
            round=self.protocol.round,
            applied_round=self.applied_round,
            checkpoint=str(self.final_checkpoint) if self.final_checkpoint else None,
            metrics=self.metrics.snapshot(),
        )

    # ------------------------------------------------------------------ the core

    def _feed(self, event: Event) -> None:
        if self.protocol.phase is Phase.STOPPED:
            return
        try:
            out = self.protocol.handle(event, trio.current_time())
        except Exception:  # a core bug must not take the node (and its checkpoint) down
            log.exception("protocol.error", event_type=type(event).__name__)
            return
        self._execute(out)

    def _on_timer(self, key: Any) -> None:
        self._feed(TimerFired(key))

    def _execute(self, out: list[fx.Effect]) -> None:
        # Exhaustive: a new effect that is not handled here fails mypy (assert_never), the
        # same contract as the sim driver.
        m = self.metrics
        now = trio.current_time()
        for eff in out:
            match eff:
                case fx.Send():
                    self._spawn(self._send, eff)
                case fx.SetTimer():
                    self._timers.set(eff.key, eff.at)
                case fx.CancelTimer():
                    self._timers.cancel(eff.key)
                case fx.TrainLocal() | fx.ApplyAverage() | fx.LoadState() | fx.ServeState():
                    self._jobs_send.send_nowait(eff)
                case fx.Evict():
                    m.peers_evicted += 1
                    log.info("peer.evicted", peer=eff.peer, reason=eff.reason)
                case fx.Ban():
                    m.peers_banned += 1
                    log.warning("peer.banned", peer=eff.peer, for_s=eff.until - now)
                    self._spawn(self._disconnect, eff.peer)
                case fx.ContributionsAccepted():
                    m.contributions_accepted += len(eff.peers)
                case fx.ContributionRejected():
                    m.contributions_rejected[eff.reason.value] += 1
                    log.info(
                        "contribution.rejected", round=eff.round, peer=eff.peer, reason=eff.reason
                    )
                case fx.RoundClosed():
                    self._round_closed(eff)
                case fx.DriftObserved():
                    m.last_drift = eff.distance
                    log.debug(
                        "drift.observed", round=eff.round, distance=eff.distance, peers=eff.peers
                    )
                case fx.SyncStarted():
                    m.syncs_started += 1
                    log.info("sync.started", reason=eff.reason, asked=list(eff.asked))
                case fx.WaitingForPeers():
                    log.info(
                        "node.waiting_for_peers",
                        members=eff.members,
                        need=eff.need,
                        deadline_in_s=None if eff.deadline is None else eff.deadline - now,
                    )
                case fx.StartedRounds():
                    log.info(
                        "node.started_rounds", round=eff.round, members=eff.members, why=eff.reason
                    )
                case fx.SyncFinished():
                    if eff.ok:
                        m.syncs_ok += 1
                    else:
                        m.syncs_failed += 1
                    log.info(
                        "sync.finished",
                        ok=eff.ok,
                        round=eff.round,
                        responders=eff.responders,
                        agreeing=eff.agreeing,
                    )
                case fx.Dial():
                    self._spawn(self._dial, eff)
                case _:
                    assert_never(eff)
        m.round = self.protocol.round
        m.peers_live = len(self.protocol.peers.live_peers())

    def _round_closed(self, eff: fx.RoundClosed) -> None:
        m = self.metrics
        if eff.outcome == "average":
            m.rounds_committed += 1
        elif eff.outcome == "fallback":
            m.rounds_fallback += 1
        else:
            m.rounds_skipped += 1
        duration = eff.closed_at - eff.opened_at
        m.round_durations.append(duration)
        cpu = time.thread_time()  # this runs on the event-loop thread
        loop_cpu, self._loop_cpu0 = cpu - self._loop_cpu0, cpu
        proc = time.process_time()
        proc_cpu, self._proc_cpu0 = proc - self._proc_cpu0, proc
        log.info(
            "round.closed",
            round=eff.round,
            outcome=eff.outcome,
            trigger=eff.trigger,
            contributors=eff.contributors,
            duration_s=round(duration, 4),
            loss=m.last_loss,
            loop_cpu_s=round(loop_cpu, 4),
            # Calibration input (sim/calibrate.py): all of the node's CPU in the round,
            # learner, codec threads and transport together.
            proc_cpu_s=round(proc_cpu, 4),
        )
        if self.observer is not None:
            self.observer.round_closed(eff)
        # Campaign progress is the core's: rounds the swarm averaged (a fallback round alone
        # does not count), so one node never completes a multi-node campaign by itself.
        if self.protocol.completed(self.config.max_rounds):
            self._done.set()

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # ------------------------------------------------------------------ sending

    async def _await_view(self, c: Contribution) -> None:
        """An omniscient attacker crafts from what it received: it waits for every live
        peer's contribution of the round, or half a round timeout, whichever comes first."""
        want = len(self.protocol.peers.live_peers())
        deadline = trio.current_time() + self.protocol.config.round_timeout / 2
        while self._adversary.seen(c.round, c.kind) < want and trio.current_time() < deadline:
            await trio.sleep(ATTACKER_POLL_S)

    async def _send(self, eff: fx.Send) -> None:
        if isinstance(eff.message, Heartbeat):
            await self._send_now(eff)
            return
        self._sends_in_flight += 1
        try:
            await self._send_now(eff)
        finally:
            self._sends_in_flight -= 1
            self._send_finished.set()
            self._send_finished = trio.Event()

    async def _send_now(self, eff: fx.Send) -> None:
        msg: Message = eff.message
        if isinstance(msg, Contribution) and self._adversary.omniscient:
            await self._await_view(msg)
        if self._adversary.active:
            swarm = len(self.protocol.peers.live_peers()) + 1
            cfg = self.protocol.config
            sent = self._adversary.rewrite(msg, swarm, cfg.sketch_size, cfg.sketch_seed)
            if sent is not msg and not isinstance(msg, Heartbeat):
                kind = type(msg).__name__
                log.warning("adversary.corrupted", mode=self._adversary.mode, message=kind)
            msg = sent
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            env = to_envelope(
                msg, self.config.run_id, self.identity.peer_id, round=self.protocol.round
            )
            data: bytearray | memoryview
            if env.nbytes() > THREAD_CODEC_BYTES:
                # Into a reused buffer (buffers.py): a fresh 62 MB one cost ~15 k page faults
                # (~40 ms of system time) per message, several messages a round.
                data = await self._workers.run(
                    partial(encode_buffer, env, self.identity, alloc=self._send_buffers.take)
                )
            else:
                data = encode(env, self.identity)
        except (ValueError, WireError) as exc:
            log.error("send.encode_failed", message=type(msg).__name__, error=str(exc))
            return
        try:
            bulk = isinstance(msg, (Contribution, StateResponse))
            bulk = bulk or len(data) > self.net.config.max_small_size
            if bulk:
                _log_cpu("message.encoded", msg, len(data), wall0, cpu0)
            payload: bytes | bytearray | memoryview = data if bulk else bytes(data)
            group = msg.round if isinstance(msg, GroupMessage) else None
            what = type(msg).__name__
            async with trio.open_nursery() as n:
                for peer in eff.peers:
                    n.start_soon(self._send_one, peer, payload, bulk, what, group)
        finally:
            # Every send of it is over (sent, failed or cancelled): nothing reads it now.
            if isinstance(data, memoryview):
                self._send_buffers.give(data)

    async def _send_one(
        self,
        peer: str,
        data: bytes | bytearray | memoryview,
        bulk: bool,
        what: str,
        group_round: int | None = None,
    ) -> None:
        limit = self.config.send_timeout + self.net.config.transfer_deadline(len(data))
        started = time.perf_counter()
        try:
            with trio.fail_after(limit):
                if bulk:
                    await self.net.send_bulk(peer, data)
                else:
                    await self.net.send_small(peer, bytes(data))
        except (NetError, trio.TooSlowError) as exc:
            self.metrics.send_failures += 1
            log.info("send.failed", peer=peer, message=what, bytes=len(data), error=str(exc))
            if group_round is not None and peer in self.net.connected_peers():
                # The net layer's bounded retries are spent (bulk.py) and the peer is still
                # connected (else PeerDisconnected says so): the group cannot finish, and the
                # core degrades now instead of at the group deadline.
                self._feed(SendFailed(peer, group_round))
            return
        if bulk:  # calibration: offer, data and confirmation, against the sim's link time
            seconds = round(time.perf_counter() - started, 4)
            log.info("bulk.sent", peer=peer, message=what, bytes=len(data), seconds=seconds)
        self.metrics.messages_out += 1
        self.metrics.bytes_out += len(data)
        self.metrics.bytes_out_by_message[what] += len(data)

    def _is_member(self, peer: str) -> bool:
        """A peer the core has admitted (it spoke the protocol to us) and not banned."""
        return peer in self.protocol.peers and not self.protocol.is_banned(
            peer, trio.current_time()
        )

    async def _dial(self, eff: fx.Dial) -> None:
        """Discovery, decided by the core: connect to a peer it learned of or lost."""
        if eff.peer in self.net.connected_peers():
            # Already connected (e.g. the peer dialled us first, or a DHT query did):
            # logged so that the core's decision stays visible either way.
            log.info("net.dial_not_needed", peer=eff.peer, reason="connected")
            return  # (the core never asks for a banned peer)
        if f"/p2p/{eff.peer}" not in eff.hint:
            return  # not a multiaddr of that peer (e.g. a bare IP): nothing to dial
        self.metrics.dials += 1
        try:
            await self.net.connect(eff.hint)
            log.info("net.dialled", peer=eff.peer, address=eff.hint)
        except NetError as exc:
            self.metrics.dials_failed += 1
            log.info("net.dial_failed", peer=eff.peer, address=eff.hint, error=str(exc))

    async def _disconnect(self, peer: str) -> None:
        try:
            await self.net.disconnect(peer)
        except Exception as exc:  # py-libp2p may raise anything for a vanished peer
            log.info("peer.disconnect_failed", peer=peer, error=str(exc))

    # ------------------------------------------------------------------ receiving

    async def _incoming_loop(self) -> None:
        async for inc in self.net.incoming:
            await self._on_incoming(inc)

    async def _on_incoming(self, inc: Incoming) -> None:
        m = self.metrics
        m.messages_in += 1
        m.bytes_in += len(inc.data)
        peer = inc.peer_id
        if self.protocol.is_banned(peer, trio.current_time()):
            m.wire_rejected["banned"] += 1  # dropped undecoded: a ban must save us the work
            return
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            if len(inc.data) > THREAD_CODEC_BYTES:
                env = await self._workers.run(_decode, inc.data, self.config.run_id)
            else:
                env = _decode(inc.data, self.config.run_id)
            if env.sender != peer:
                raise SenderMismatch()
            self._replay.admit(env)
            message = from_envelope(env)
            if isinstance(message, Piece | SliceResult) and len(inc.data) > THREAD_CODEC_BYTES:
                # The core's per-piece checks read these facts instead of computing them on
                # the loop's thread (group.with_facts), while other transfers keep landing.
                message = await self._workers.run(with_facts, message)
        except WireError as err:
            m.wire_rejected[err.reason] += 1
            log.warning("wire.rejected", peer=peer, reason=err.reason, bytes=len(inc.data))
            self._feed(WireRejected(peer, wire_reason(err)))
            return
        if self.observer is not None:
            self.observer.heard(peer, message)
        if peer not in self.protocol.peers:
            log.info("peer.joined", peer=peer, address=inc.remote_ip)  # the core admits it
        if isinstance(message, Contribution) and self._adversary.active:
            self._adversary.observe(peer, message)
        if isinstance(message, Heartbeat) and message.dial:
            message = replace(message, dial=observed_dial(message.dial, inc.remote_ip))
        self._feed(MessageReceived(peer, message, inc.remote_ip))
        if not isinstance(inc.data, bytes):  # a bulk message: decoded, validated, handled
            _log_cpu("message.handled", message, len(inc.data), wall0, cpu0)

    async def _peer_event_loop(self) -> None:
        async for ev in self.net.peer_events:
            if isinstance(ev, NetPeerConnected):
                if self.protocol.is_banned(ev.peer_id, trio.current_time()):
                    # A banned peer redialled us: hang up before it costs any decoding.
                    log.info("net.refused_banned", peer=ev.peer_id)
                    self._spawn(self._disconnect, ev.peer_id)
                    continue
                log.info("net.connected", peer=ev.peer_id, address=ev.remote_ip)
                # Unverified: the core greets it (hello) and admits it when it speaks.
                if not self._stopping:
                    self._feed(PeerConnected(ev.peer_id, ev.remote_ip, verified=False))
            elif isinstance(ev, NetPeerDisconnected):
                log.info("net.disconnected", peer=ev.peer_id)
                self._feed(PeerDisconnected(ev.peer_id))
            elif isinstance(ev, PeerMisbehaved):
                # A transport fault of an authenticated peer: the core keeps the score.
                self._feed(WireRejected(ev.peer_id, ev.reason))

    async def _redial_loop(self) -> None:
        """Keep dialling configured peers we are not connected to (restarts, late starts)."""
        while True:
            now = trio.current_time()
            connected = set(self.net.connected_peers())
            async with trio.open_nursery() as n:
                for addr in self.config.bootstrap:
                    peer = addr.rsplit("/p2p/", 1)[-1]
                    if peer in connected or self.protocol.is_banned(peer, now):
                        continue
                    n.start_soon(self._try_dial, addr)
            await trio.sleep(self.config.redial_interval)  # a poll period, not a sync point

    async def _discovery_loop(self, dht: Any) -> None:
        """DHT provider records under the run id: announce ourselves, hand the members found
        to the core (``PeersFound``); the core decides whom to dial."""
        await self.net.bootstrap_done.wait()
        while True:
            await add_peers(dht, self.net.connected_peers())
            found = await announce_and_find(
                dht, self.config.run_id, self.net.config.control_timeout
            )
            log.info("dht.found", peers=len(found))
            if found:
                self._feed(PeersFound(tuple(found)))
            await trio.sleep(self.config.discovery_interval)  # a poll period, not a sync point

    async def _try_dial(self, addr: str) -> None:
        try:
            await self.net.connect(addr)
        except NetError as exc:
            log.debug("net.dial_failed", address=addr, error=str(exc))

    # ------------------------------------------------------------------ learning

    async def _learner_worker(self) -> None:
        async for job in self._jobs_recv:
            try:
                await self._run_job(job)
            except Exception:
                # A failed step leaves the round to its timeout (it closes without our update)
                log.exception("learner.job_failed", job=type(job).__name__)
            if isinstance(job, _Checkpoint) and job.final:
                self._final_written.set()

    async def _run_job(self, job: _Job) -> None:
        if isinstance(job, fx.TrainLocal):
            p = self.protocol
            if self._stopping or not p.wants_update(job.round):
                return  # the round this was for is gone; a later TrainLocal is queued
            started = time.perf_counter()
            ready, cpu = await trio.to_thread.run_sync(_with_cpu, self.bridge.train, job)
            self.metrics.last_loss = ready.loss
            log.info(
                "train.done",
                round=job.round,
                kind=job.kind,
                loss=ready.loss,
                seconds=round(time.perf_counter() - started, 4),
                cpu_s=round(cpu, 4),  # seconds / cpu_s: how much of a core this node gets
            )
            if self._adversary.active and p.config.strategy == "group":
                swarm = len(p.peers.live_peers()) + 1
                crafted = self._adversary.craft_update(ready.round, ready.kind, ready.update, swarm)
                ready = replace(ready, update=crafted, encoded=None)
                log.warning("adversary.corrupted", mode=self._adversary.mode, message="update")
            self._feed(ready)
        elif isinstance(job, fx.ApplyAverage):
            started = time.perf_counter()
            await trio.to_thread.run_sync(self.bridge.apply, job)
            self._averages.give(job.update)  # applied: the next round's average goes there
            # Calibration input: the sim charges no time for applying an average.
            log.info("apply.done", round=job.round, seconds=round(time.perf_counter() - started, 4))
            self.applied_round = job.round + 1
            every = self.config.checkpoint_every
            if every and self.applied_round % every == 0 and not self._stopping:
                await self._write_checkpoint(final=False)
                # Evaluate the state just checkpointed (before the next round touches it).
                await self._run_job(_Evaluate(f"round-{self.applied_round}"))
        elif isinstance(job, fx.LoadState):
            await trio.to_thread.run_sync(self.bridge.load, job)
            self.applied_round = job.round
            self.metrics.states_loaded += 1
            log.info("state.loaded", round=job.round, digest=job.digest)
            if self.protocol.completed(self.config.max_rounds):
                self._done.set()
        elif isinstance(job, fx.ServeState):
            resp = await trio.to_thread.run_sync(
                self.bridge.state_response, job, self.applied_round
            )
            log.info("state.served", peer=job.peer, round=resp.round)
            self._spawn(self._send, fx.Send((job.peer,), resp))
        elif isinstance(job, _Checkpoint):
            await self._write_checkpoint(final=job.final)
        else:
            loss = await trio.to_thread.run_sync(self.bridge.learner.evaluate)
            self.eval_losses[job.tag] = loss
            log.info("eval", tag=job.tag, loss=loss, round=self.applied_round)
            if self.observer is not None:
                self.observer.evaluated(job.tag, self.applied_round, loss)

    async def _write_checkpoint(self, *, final: bool) -> None:
        if self._checkpoint_fn is None:
            return
        extra = {
            "final": final,
            "loss": None if math.isnan(self.metrics.last_loss) else self.metrics.last_loss,
            "peer_id": self.identity.peer_id,
        }
        with trio.CancelScope(shield=True):  # a checkpoint is never cut in half by a cancel
            path = await trio.to_thread.run_sync(self._checkpoint_fn, self.applied_round, extra)
        if path is not None:
            self.metrics.checkpoints_written += 1
            if final:
                self.final_checkpoint = path
            log.info("node.checkpoint", round=self.applied_round, final=final, path=str(path))


def observed_dial(dial: str, remote_ip: str) -> str:
    """A peer listening on every interface (0.0.0.0) declares ``/ip4/0.0.0.0/tcp/P/...``: the
    route to pass on is that port at the address its connection came from."""
    if remote_ip and "." in remote_ip and dial.startswith("/ip4/0.0.0.0/"):
        return f"/ip4/{remote_ip}/" + dial.removeprefix("/ip4/0.0.0.0/")
    return dial


def _with_cpu(
    fn: Callable[[fx.TrainLocal], LocalUpdateReady], job: fx.TrainLocal
) -> tuple[LocalUpdateReady, float]:
    """``fn(job)`` and the CPU seconds this (worker) thread spent on it."""
    cpu0 = time.thread_time()
    return fn(job), time.thread_time() - cpu0


def _log_cpu(event: str, msg: Message, size: int, wall0: float, cpu0: float) -> None:
    """Calibration input (issue 15): what one bulk message costs this node besides the link.
    ``cpu_s`` is the event-loop thread's CPU (a decode or encode moved to a worker thread is
    in ``wall_s`` only); ``wall_s`` includes waiting for a core on a busy machine."""
    log.info(
        event,
        message=type(msg).__name__,
        bytes=size,
        cpu_s=round(time.thread_time() - cpu0, 5),
        wall_s=round(time.perf_counter() - wall0, 5),
    )


def _decode(data: bytes | memoryview, run_id: str) -> Any:
    return decode(data, expected_run_id=run_id)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
