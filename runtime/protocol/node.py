"""ProtocolNode: one swarm member's whole protocol, as a sans-I/O state machine.

Rules of this module (they are what lets the same code run in SimPy and on libp2p):

1. No I/O, no clocks, no event loops. ``handle(event, now)`` and ``start(now)`` are the only
   entry points; they return the effects the driver must execute, in order.
2. All randomness comes from the ``random.Random`` passed in, and nothing iterates over an
   unordered container: the same seed and the same event sequence give the same effects.
3. Every peer-facing decision is keyed on the verified peer id carried by the event.
4. Bad peer input never raises: it becomes a ContributionRejected effect and a reputation
   verdict. Exceptions out of this class are bugs (ProtocolStateError) or driver misuse.

See rounds.py for the theory of operation of a round, membership.py for liveness and views,
validation.py for what is accepted, sync.py for catching up, docs/drift.md for why replicas
stay close.
"""

from __future__ import annotations

import functools
import math
import random
from bisect import insort
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

import numpy as np
import torch

from swarm_tune.runtime.aggregation.centered import bucket_seed
from swarm_tune.runtime.aggregation.near_duplicates import duplicate_labels
from swarm_tune.runtime.aggregation.rules import aggregate, influence_weights, make_rule
from swarm_tune.runtime.aggregation.weighted import weighted_average, weighted_average_flat
from swarm_tune.runtime.compression.codecs import CompressionError
from swarm_tune.runtime.compression.update import decode_update
from swarm_tune.runtime.protocol import effects as fx
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.events import (
    Event,
    LocalUpdateReady,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    PeersFound,
    SendFailed,
    TimerFired,
    TimerKey,
    WireRejected,
)
from swarm_tune.runtime.protocol.group import GroupRound, subgroup
from swarm_tune.runtime.protocol.membership import PeerTable, subnet_of
from swarm_tune.runtime.protocol.messages import (
    F32,
    AuditRequest,
    AuditVerdict,
    Contribution,
    Goodbye,
    GroupMessage,
    Heartbeat,
    Message,
    Piece,
    SliceResult,
    StateRequest,
    StateResponse,
)
from swarm_tune.runtime.protocol.peer_memory import most_recent, remember
from swarm_tune.runtime.protocol.picks import pick
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.reputation import Reputation
from swarm_tune.runtime.protocol.rounds import (
    Admitted,
    OpenRound,
    Phase,
    Trigger,
    next_phase,
    update_kind,
)
from swarm_tune.runtime.protocol.shared_work import shared_aggregate
from swarm_tune.runtime.protocol.strategy import make_strategy
from swarm_tune.runtime.protocol.summary import TensorCheck, UpdateSummary
from swarm_tune.runtime.protocol.sync import SyncDecision, decide
from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    Sketch,
    UpdateKind,
    median_sketch,
    sketch_distance,
)
from swarm_tune.runtime.protocol.validation import (
    REPLAY_SCORE,
    CloseTimeJudge,
    check_structure,
    judge_pool,
)

ROUND_TIMER = "round"
HEARTBEAT_TIMER = "heartbeat"
SYNC_TIMER = "sync"
START_TIMER = "start"
GROUP_TIMER = "group"  # a group round stops waiting and degrades to flat (group.py)
MAX_PENDING_ADDRESSES = 1024  # transport peers not yet members whose address we keep
OTHER_RUN_KEPT = 64  # peers refused as another run's before start, not waited for at start
SELF_SUBNET = "self"

Effects = list[fx.Effect]


def _new_array(numel: int) -> F32 | None:
    return None  # the average goes into a new array


@dataclass(slots=True)
class _PendingSync:
    nonce: int
    reason: str
    asked: tuple[str, ...]
    responses: dict[str, StateResponse]
    widened: bool = False  # asked a second set of peers after a split answer (_widen)


DIAL_QUEUE = 64  # advertised peers kept between two heartbeat ticks
# A state sync's agreed state more than this many rounds behind our own is not loaded.
STALE_SYNC_ROUNDS = 1
# An early parameter round is scheduled this many rounds ahead: peers one round behind or
# ahead still hear the announcement before they open it.
EARLY_AHEAD = 2
EARLY_SAMPLE = 32  # peers whose sketches the split alarm looks at (spread over the ids)


class ProtocolNode:
    """A node's protocol state. Drivers own one per (virtual or real) node."""

    def __init__(
        self,
        node_id: str,
        config: ProtocolConfig,
        spec: ModelSpec,
        dataset_size: int,
        rng: random.Random,
        start_round: int = 0,
        address: str = "",
        dial: str = "",
    ) -> None:
        self.node_id = node_id
        #: How peers can reach us (our multiaddr; the sim: ""), sent in heartbeats.
        self.dial = dial
        self.config = config
        self.spec = spec
        self.dataset_size = dataset_size
        self._rng = rng
        self.peers = PeerTable(config, node_id)
        self.reputation = Reputation(config)
        self._judge = CloseTimeJudge(config)
        self._strategy = make_strategy(config.strategy, config.gossip_fanout)
        self._rule = make_rule(config.rule_params())
        self.phase = Phase.IDLE
        #: Memory for a group round's whole average (``numel`` float32), or None for a new
        #: array: a driver that reuses it across rounds lends it (net/buffers.py). Not I/O.
        self.average_out: Callable[[int], F32 | None] = _new_array
        self.round = start_round
        self._open: OpenRound | None = None
        self._buffer: dict[int, dict[str, Contribution]] = {}
        # Newest round each peer sent a contribution for (any verdict but a bad signature,
        # which never reaches the core): who the quorum waits for. See _expected_peers.
        self._contributed: dict[str, int] = {}
        self._dialed: dict[str, float] = {}  # peer -> when we last asked to dial it
        # Batches of (peer, hint) advertised since the last tick, oldest first: a log read as
        # the table ``remember`` would keep (peer_memory.most_recent; _learned), bounded by
        # compaction. A batch is the message's own tuple: a heartbeat costs an append.
        self._to_dial: list[tuple[tuple[str, str], ...]] = []
        self._to_dial_count = 0  # entries in those batches
        self._sync: _PendingSync | None = None
        # Our own update sits in our own network's bucket of the subnet cap: on a LAN or
        # loopback everyone shares one subnet, and treating "self" as a separate network
        # would hand our own update an outsized share.
        self._self_subnet = (
            subnet_of(address, config.ipv4_prefix, config.ipv6_prefix) if address else SELF_SUBNET
        )
        self.digest = ""
        self.sketch: Sketch = ()
        self.sketch_round = -1
        #: Campaign progress: rounds the swarm actually averaged (the last round this node
        #: closed with an average, or the swarm round a state sync loaded, plus one). Fallback
        #: rounds do not advance it, so a node alone never completes a multi-node campaign.
        self.progress = start_round
        self._catch_up = False
        self._expected: frozenset[str] = frozenset()
        # Peers refused as another run's before start (bounded): never expected at start.
        self._other_run: set[str] = set()
        # Addresses of transport peers that have not spoken the protocol yet (bounded: any
        # libp2p neighbour connects); used when they do, for the subnet cap.
        self._pending_addresses: dict[str, str] = {}
        # Early parameter rounds (see _early_params): the one this node scheduled or adopted
        # (announced in heartbeats while ahead), and the last round this node opened as a
        # parameter round (the rate limit).
        self._early = -1
        self._last_params = -1
        self._returned = -1  # the round an evicted peer last came back (a healed partition?)
        # strategy "group": the open round's reduce-scatter state (None: flat, or degraded),
        # and group messages that came before our own update for their round.
        self._group: GroupRound | None = None
        self._group_early: dict[int, list[tuple[str, GroupMessage]]] = {}

    # -- entry points ---------------------------------------------------------------

    def start(self, now: float, catch_up: bool = False, expected: Iterable[str] = ()) -> Effects:
        """Begin participating: wait (WAITING_FOR_PEERS, at most ``start_deadline``) for
        ``min_peers`` members, itself included, and for the ``expected`` peers (those the
        driver dialled at bootstrap, so a swarm that starts together opens round 0
        together); then, with ``catch_up``, ask peers for the swarm's state first."""
        out: Effects = [
            fx.SetTimer(TimerKey(HEARTBEAT_TIMER), now + self.config.heartbeat_interval)
        ]
        self._catch_up = catch_up
        self._expected = frozenset(expected) - {self.node_id} - self._other_run
        self._other_run.clear()
        members = self.members()
        if not self._ready():
            self._transition(Trigger.WAIT)
            wait = self.config.start_deadline
            deadline = now + wait if wait > 0 else None
            if deadline is not None:
                out.append(fx.SetTimer(TimerKey(START_TIMER), deadline))
            out.append(fx.WaitingForPeers(members, self.config.min_peers, deadline))
            return out
        return out + self._begin(now)

    def _begin(self, now: float) -> Effects:
        if self._catch_up and self.peers.live_peers():
            return self._begin_sync("join", now)
        self._transition(Trigger.START)
        return self._open_round(self.round, now)

    def _ready(self) -> bool:
        if self.members() < self.config.min_peers:
            return False
        return all((r := self.peers.get(p)) is not None and r.live for p in self._expected)

    def _maybe_stop_waiting(self, now: float) -> Effects:
        if self.phase is not Phase.WAITING_FOR_PEERS or not self._ready():
            return []
        out: Effects = [
            fx.CancelTimer(TimerKey(START_TIMER)),
            fx.StartedRounds(self.round, self.members(), "peers"),
        ]
        return out + self._begin(now)

    # -- what drivers ask the core ----------------------------------------------------

    def members(self) -> int:
        """Swarm members this node counts, itself included (``min_peers`` counts the same)."""
        return len(self.peers.live_peers()) + 1

    def is_banned(self, peer: str, now: float) -> bool:
        """Drivers refuse a banned peer's bytes and redials with this (no list of their own)."""
        return self.reputation.is_banned(peer, now)

    def completed(self, max_rounds: int) -> bool:
        """Is a campaign of ``max_rounds`` rounds done for this node? When the swarm averaged
        that many (``progress``), or when its round is past the end, it averaged at least
        once and too few members are left to average again (the others finished first). A
        node that never averaged, alone from the start, never completes: rounds alone are no
        campaign. "Too few", not "none": two nodes left below ``min_peers`` ran fallback
        rounds with each other until killed (742 in 5.5 minutes in a 6-node twin)."""
        if max_rounds <= 0:
            return False
        if self.progress >= max_rounds:
            return True
        stranded = self.members() < self.config.min_peers
        return self.round >= max_rounds and self.progress > 0 and stranded

    def wants_update(self, round_number: int) -> bool:
        """Is a TrainLocal for ``round_number`` still wanted? (A queued one may be stale.)"""
        return self.phase is Phase.TRAINING and self.round == round_number

    def hello(self) -> Heartbeat:
        """What this node says first on a new connection: a heartbeat without peer exchange."""
        return self._heartbeat(())

    def _heartbeat(self, known: tuple[tuple[str, str], ...]) -> Heartbeat:
        return Heartbeat(
            self.round,
            self.dataset_size,
            self.digest,
            self.sketch,
            known,
            self.sketch_round,
            self.dial,
            self._early if self._early > self.round else -1,
        )

    def stop(self, now: float) -> Effects:
        """Graceful leave: tell peers, abandon the open round."""
        if self.phase is Phase.STOPPED:
            return []
        self._transition(Trigger.STOP)
        self._open = self._group = None
        live = tuple(self.peers.live_peers())
        return [fx.Send(live, Goodbye())] if live else []

    def handle(self, event: Event, now: float) -> Effects:
        if self.phase is Phase.STOPPED:
            return []
        return _HANDLERS[type(event)](self, event, now)

    # -- membership -----------------------------------------------------------------

    def _on_connected(self, ev: PeerConnected, now: float) -> Effects:
        """The admission handshake. A *verified* connection (the sim's: every simulated
        peer is in this run) makes a member at once. An unverified one (a libp2p connection
        proves an identity, not membership: relays, DHT neighbours and other runs connect
        too) makes a member only if it already was one (a reconnect); otherwise we greet it
        with a hello and keep its address until its first verified message admits it."""
        if ev.peer == self.node_id:
            return []
        if ev.verified or ev.peer in self.peers:
            self._note_return(ev.peer)
            self.peers.connect(ev.peer, ev.address, now, self._rng)
            out = self._maybe_stop_waiting(now)
        else:
            if len(self._pending_addresses) >= MAX_PENDING_ADDRESSES:
                self._pending_addresses.pop(next(iter(self._pending_addresses)))
            self._pending_addresses[ev.peer] = ev.address
            out = []
        # A real connection may be a restarted peer that forgot us: greet it either way.
        return out if ev.verified else [fx.Send((ev.peer,), self.hello()), *out]

    def _on_disconnected(self, ev: PeerDisconnected, now: float) -> Effects:
        self._pending_addresses.pop(ev.peer, None)
        return self._lost(ev.peer, "disconnected", now)

    def _on_wire_rejected(self, ev: WireRejected, now: float) -> Effects:
        # Counts against reputation only: the driver already counted the wire rejection, and
        # it is not a contribution (no ContributionRejected, no double counting in metrics).
        until = self.reputation.record(ev.peer, ev.reason, now)
        out: Effects = [fx.Ban(ev.peer, until)] if until is not None else []
        if ev.reason is RejectReason.WRONG_RUN:
            # Another run's node (e.g. another layer shard's, from a shared bootstrap list)
            # never becomes a member: waiting for it would only hold the start to its deadline.
            if self.phase is Phase.IDLE and len(self._other_run) < OTHER_RUN_KEPT:
                self._other_run.add(ev.peer)
            elif ev.peer in self._expected:
                self._expected -= {ev.peer}
                out += self._maybe_stop_waiting(now)
        return out

    def _send_heartbeat(self, now: float) -> Effects:
        live = self.peers.live_peers()
        if not live:
            return []
        partial = self.config.view_size > 0
        known = self.peers.sample_known(self.config.peer_exchange, self._rng)
        hb = self._heartbeat(known)
        targets = (
            self._strategy.targets(live, self._rng, self.node_id, self.round)
            if partial
            else tuple(live)
        )
        return [fx.Send(targets, hb)]

    def _on_heartbeat(self, peer: str, hb: Heartbeat, now: float) -> Effects:
        self.peers.apply_heartbeat(peer, hb)
        if self.config.group_size > 0 and self.config.strategy == "group":
            # Subgroups: we see pieces from our own subgroup only, so a peer that averaged
            # elsewhere would drop out of ``expected`` and our partition would differ from
            # everyone else's. Its heartbeat's round says it is working (capped at ours).
            done = min(hb.round, self.round) - 1
            if done > self._contributed.get(peer, -1):
                remember(self._contributed, peer, done)
        if hb.param_round >= 0:
            self._adopt_announced()
        known = hb.known_peers[: self.config.peer_exchange]
        if known and self.config.view_size > 0:
            self.peers.learn(known, now, self._rng)
        self._queue_dials(known)
        return []

    def _on_peers_found(self, ev: PeersFound, now: float) -> Effects:
        self._queue_dials(ev.peers[:DIAL_QUEUE])
        return []

    def _queue_dials(self, candidates: tuple[tuple[str, str], ...]) -> None:
        """Remember peers to dial at the next tick (a bounded number per tick, see _dials)."""
        if self.config.dial_peers and candidates:
            self._to_dial.append(candidates)
            self._to_dial_count += len(candidates)
            if self._to_dial_count > 4 * DIAL_QUEUE:  # bounded, however many adverts come
                kept = tuple(self._learned().items())
                self._to_dial, self._to_dial_count = [kept], len(kept)

    def _learned(self) -> dict[str, str]:
        """The peers to dial that adverts queued (``remember``'s table, limit DIAL_QUEUE)."""
        me = self.node_id
        log = [(p, hint) for batch in self._to_dial for p, hint in batch if hint and p != me]
        return most_recent(log, DIAL_QUEUE)

    def _hint(self, peer: str) -> str:
        rec = self.peers.get(peer)
        return "" if rec is None else rec.dial or rec.address

    def _dials(self, candidates: Iterable[tuple[str, str]], now: float) -> Effects:
        """Discovery: ask the driver to dial peers we are not connected to (advertised by
        peer exchange, or evicted ones that may be back), at most ``dial_peers`` per
        heartbeat tick and each at most once per ``redial_interval``. Banned peers are never
        dialled; a hint is only a route (the connection proves the peer id)."""
        out: Effects = []
        budget = self.config.dial_peers
        # An entry older than redial_interval blocks nothing (as if absent): forget it, or
        # the table only grows, toward TRACKED_PEERS (~3 peers a node-round in a gossip
        # world: ~200 KB a node by that bound). Oldest first: ``remember`` re-inserts.
        dialed, expired = self._dialed, now - self.config.redial_interval
        while dialed:
            oldest = next(iter(dialed))
            if dialed[oldest] > expired:
                break
            del dialed[oldest]
        for peer, hint in candidates:
            if len(out) >= budget:
                break
            rec = self.peers.get(peer)
            if (
                not hint
                or peer == self.node_id
                or (rec is not None and rec.live and rec.round >= 0)  # live and heard
                or self.reputation.is_banned(peer, now)
                or self._dialed.get(peer, -math.inf) > now - self.config.redial_interval
            ):
                continue
            remember(self._dialed, peer, now)
            out.append(fx.Dial(peer, hint))
        return out

    # -- messages ---------------------------------------------------------------------

    def _on_message(self, ev: MessageReceived, now: float) -> Effects:
        peer, msg = ev.peer, ev.message
        if peer == self.node_id:
            return []
        reputation = self.reputation
        if reputation.bans and reputation.is_banned(peer, now):  # no bans: no call (N^2)
            if isinstance(msg, Contribution):
                return [fx.ContributionRejected(msg.round, peer, RejectReason.BANNED)]
            return []
        rec = self.peers.by_id.get(peer)  # the table itself: no call per message (N^2)
        if rec is not None and rec.live and not self._pending_addresses:
            # The common case (a flat round: N^2 of these): a live member. Exactly what the
            # general path below does for it - it proves liveness and nothing else changes.
            if now > rec.last_seen:
                rec.last_seen = now
            if isinstance(msg, Contribution):  # its subnet is at hand: no second lookup
                return self._on_contribution(peer, msg, now, rec.subnet)
            return self._dispatch(peer, msg, now)
        # Any verified message admits an unknown sender (the second half of the handshake,
        # see _on_connected), with the address its transport connection reported.
        address = self._pending_addresses.pop(peer, "") or ev.address
        self._note_return(peer)
        joined = self.peers.heard_from(peer, now, self._rng, address)
        out = self._dispatch(peer, msg, now)
        return out + self._maybe_stop_waiting(now) if joined else out

    def _dispatch(self, peer: str, msg: Message, now: float) -> Effects:
        if isinstance(msg, Contribution):  # the most frequent first
            return self._on_contribution(peer, msg, now)
        if isinstance(msg, Heartbeat):
            return self._on_heartbeat(peer, msg, now)
        if isinstance(msg, StateRequest):
            return [fx.ServeState(peer, msg.nonce)]
        if isinstance(msg, StateResponse):
            return self._on_state_response(peer, msg, now)
        if isinstance(msg, Goodbye):
            return self._lost(peer, "goodbye", now)
        if isinstance(msg, Piece | SliceResult | AuditRequest | AuditVerdict):
            return self._on_group_message(peer, msg, now)
        return []

    def _on_contribution(
        self, peer: str, c: Contribution, now: float, subnet: str | None = None
    ) -> Effects:
        # Locals: N^2 calls per flat round.
        number, current, contributed = c.round, self.round, self._contributed
        ahead = current + self.config.future_window
        if contributed.get(peer, -1) < number <= ahead:
            remember(contributed, peer, number)
        if number < current:
            return self._verdict(peer, number, RejectReason.STALE, now)
        if number > ahead:
            return self._verdict(peer, number, RejectReason.TOO_FAR_FUTURE, now)
        rnd = self._open
        if rnd is None or number > rnd.number:
            return self._buffer_contribution(peer, c, now)
        return self._admit(peer, c, rnd, now, subnet)

    def _buffer_contribution(self, peer: str, c: Contribution, now: float) -> Effects:
        slot = self._buffer.setdefault(c.round, {})
        if peer in slot:
            return self._verdict(peer, c.round, RejectReason.DUPLICATE, now)
        if len(slot) >= self.config.max_buffered_per_round:
            return self._verdict(peer, c.round, RejectReason.BUFFER_FULL, now)
        slot[peer] = c
        return []

    def _admit(
        self, peer: str, c: Contribution, rnd: OpenRound, now: float, subnet: str | None = None
    ) -> Effects:
        """Admit ``c`` to the open round (``subnet``: the sender's, if the caller has it)."""
        admitted, refused = rnd.admitted, rnd.refused
        if peer in admitted or (refused and peer in refused):
            return self._verdict(peer, c.round, RejectReason.DUPLICATE, now)
        rnd.expected.add(peer)  # a newcomer's first contribution counts in this round
        if c.encoded is not None and not c.tensors:
            try:  # validation and aggregation only ever see decoded tensors
                c = replace(c, tensors=decode_update(self.spec, c.encoded))
            except CompressionError:
                refused.add(peer)
                return self._verdict(peer, c.round, RejectReason.COMPRESSION, now)
        reason, check = check_structure(c, self.spec, rnd.kind)
        if check is None:
            refused.add(peer)
            return self._verdict(peer, c.round, reason, now)
        if subnet is None:
            rec = self.peers.get(peer)
            subnet = rec.subnet if rec is not None else "unknown"
        admitted[peer] = (c, subnet, check)
        g = self._group
        if g is not None and g.number == c.round and not g.failed and g.owes(peer):
            # A member that still owes us its part sent its whole update instead: it left
            # the group (it degraded), so ours cannot finish either; go flat now rather than
            # at the group deadline.
            g.failed = "went flat"
            return self._group_step(now)
        return self._maybe_close_on_quorum(now)

    def _verdict(self, peer: str, rnd: int, reason: RejectReason | None, now: float) -> Effects:
        """A refusal on arrival (accepted contributions are only ever judged at close)."""
        out: Effects = []
        if reason is not None:
            out.append(fx.ContributionRejected(rnd, peer, reason))
        until = self.reputation.record(peer, reason, now)
        if until is not None:
            out.append(fx.Ban(peer, until))
        return out

    # -- rounds -----------------------------------------------------------------------

    def _open_round(self, number: int, now: float) -> Effects:
        kind = (
            "params" if number == self._early else update_kind(number, self.config.param_sync_every)
        )
        if kind == "params":
            self._last_params = number
        self.round = number
        self._open = OpenRound(number, kind, now, expected=self._expected_peers(number))
        self._group = None
        for r in [r for r in self._group_early if r < number]:
            del self._group_early[r]
        out: Effects = [
            fx.TrainLocal(number, kind),
            fx.SetTimer(TimerKey(ROUND_TIMER, number), now + self.config.round_timeout),
        ]
        # Drop buffers that fell behind; admit the ones for this round. Quorum cannot close
        # the round here: our own update is not in yet.
        for r in [r for r in self._buffer if r <= number]:
            waiting = self._buffer.pop(r)
            if r == number:
                for peer, c in waiting.items():
                    out += self._admit(peer, c, self._open, now)
        return out

    def _on_local_update(self, ev: LocalUpdateReady, now: float) -> Effects:
        rnd = self._open
        self.digest, self.sketch, self.sketch_round = ev.digest, ev.sketch, ev.round
        if rnd is None or self.phase is not Phase.TRAINING or ev.round != rnd.number:
            return []  # a straggling result for a round that already closed here
        contribution = Contribution(
            rnd.number, rnd.kind, self.dataset_size, ev.update, encoded=ev.encoded
        )
        # Checked before it is sent: receivers sharing the object reuse the check.
        check = contribution.check(self.spec)
        if ev.kind != rnd.kind or check.mismatch is not None:
            raise ValueError("learner returned an update that does not match the round")
        rnd.own, rnd.own_check, rnd.own_weight = ev.update, check, self.dataset_size
        self._transition(Trigger.OWN_READY)
        out: Effects = []
        if self.config.strategy == "group":
            started = self._start_group(rnd, check, now)
            if started is not None:
                return started
        targets = self._strategy.targets(
            self.peers.live_peers(), self._rng, self.node_id, rnd.number
        )
        if targets:
            out.append(fx.Send(targets, contribution))
        return out + self._maybe_close_on_quorum(now)

    def _maybe_close_on_quorum(self, now: float) -> Effects:
        rnd = self._open
        if rnd is None or rnd.own is None or self._group is not None:
            return []  # a group round closes itself, or degrades to this flat close
        expecting = len(rnd.expected)
        quorum = rnd.quorum
        if quorum[0] != expecting:  # asked on every admission: recomputed when it moves
            needed = self.config.quorum_count(self._strategy.expected_contributions(expecting))
            rnd.quorum = quorum = (expecting, needed)
        if len(rnd.admitted) + 1 >= quorum[1]:  # +1: our own update (checked above)
            return self._close(now, "quorum")
        return []

    def _lost(self, peer: str, reason: str, now: float) -> Effects:
        """``peer`` left (Goodbye) or its connection dropped: evict it and let a group round
        degrade without it. Not a reason to close a flat round on the quorum of those left:
        a finishing node's last contribution is confirmed on the wire before its Goodbye,
        but may still be decoding here when the small Goodbye arrives, and a connection
        drops and comes back (relays, DCUtR). Closing at once made such rounds fallbacks
        below min_peers in the NAT test; the contribution, when it lands, is admitted as a
        returning peer's and closes the round as usual."""
        out: Effects = [fx.Evict(peer, reason)] if self._gone(peer) else []
        return out + self._group_lost((peer,), now)

    def _gone(self, peer: str) -> bool:
        """Mark ``peer`` gone; an open round stops waiting for it. True if it was live.

        A peer whose contribution is already admitted stays expected: the quorum counts
        admitted updates against the expected set, so dropping a contributor from the set
        while its update stays counted closed the round one update early (seen in the
        6-node calibration: two finished nodes' Goodbyes, then the 5th update closed the
        round as a fallback below min_peers while the 6th was still landing)."""
        self._stop_expecting((peer,))
        return self.peers.mark_gone(peer)

    def _stop_expecting(self, peers: Iterable[str]) -> None:
        """The open round stops waiting for ``peers``, except those whose update it has
        admitted (the quorum counts them: see ``_gone``)."""
        if (rnd := self._open) is not None:
            rnd.expected.difference_update([p for p in peers if p not in rnd.admitted])

    def _expected_peers(self, number: int) -> set[str]:
        """Live peers round ``number`` waits for: those that contributed recently.

        Membership that strangers cannot stall: a self-signed newcomer that heartbeats but
        never contributes is live, and with a quorum of "all live peers" every round would
        wait for it until the timeout. So a peer is expected only once it has sent a
        contribution for one of the last ``contributor_rounds`` rounds (a late, STALE one
        counts: it proves the peer trains). A newcomer's first contribution still counts
        when it arrives before the round closes (it joins ``expected``);
        from then on the rounds wait for it. At a cold start nobody has contributed yet, so
        every live peer is expected. Computed once per round (O(live)); evictions shrink it.
        """
        live = self.peers.live_peers()
        window = self.config.contributor_rounds
        since = number - window
        recent = {p for p in live if self._contributed.get(p, -1) >= since}
        if window == 0 or not recent:
            return set(live)  # the old rule, or a cold start: no one has contributed yet
        return recent

    def _copy_labels(
        self,
        kind: UpdateKind,
        candidates: Sequence[tuple[str, UpdateSummary]],
        own: UpdateSummary | None,
    ) -> dict[str, int | None]:
        """Which of the round's updates are copies of one another (peer -> label, ``""`` for
        ours; equal labels: one update's worth of weight), judged once per close on the
        whole pool in peer-id order. Empty for parameter rounds: replicas in step hold
        bit-identical parameters, so only gradients are ever collapsed."""
        if kind != "grad":
            return {}
        pool = list(candidates)  # in peer-id order already: only ours is placed
        if own is not None:
            insort(pool, (self.node_id, own), key=itemgetter(0))
        labels = self._pool_copy_labels(kind, pool)
        if own is not None:
            labels[""] = labels.pop(self.node_id)
        return labels

    def _pool_copy_labels(
        self, kind: UpdateKind, pool: Sequence[tuple[str, UpdateSummary]]
    ) -> dict[str, int | None]:
        """Copy labels of a pool in peer-id order (see ``_copy_labels``)."""
        if kind != "grad":
            return {}
        labels = duplicate_labels(
            [s.fingerprint for _, s in pool],
            [s.direction for _, s in pool],
            self.config.near_duplicate_ratio,
        )
        return {p: label for (p, _), label in zip(pool, labels, strict=True)}

    def _close(self, now: float, trigger: str) -> Effects:
        rnd = self._open
        assert rnd is not None  # callers check; a second close of one round is impossible
        self._open = self._group = None
        self._transition(Trigger.CLOSE)
        out: Effects = [fx.CancelTimer(TimerKey(ROUND_TIMER, rnd.number))]
        admitted = sorted(rnd.admitted.items(), key=itemgetter(0))  # ids are unique: no tie
        candidates = [(p, sm) for p, (_, _, check) in admitted if (sm := check.summary) is not None]
        own_check = rnd.own_check
        own_summary = own_check.summary if own_check is not None else None
        subnets = {p: net for p, (_, net, _) in admitted}
        subnets[""] = self._self_subnet
        copies = self._copy_labels(rnd.kind, candidates, own_summary)
        rejected = self._judge.judge(rnd.kind, own_summary, candidates, subnets, copies)
        accepted: list[tuple[str, Admitted]] = []
        verdicts = [(peer, rejected.get(peer)) for peer, _ in admitted]
        bans = self.reputation.record_all(verdicts, now)
        for (peer, reason), entry, until in zip(verdicts, admitted, bans, strict=True):
            if reason is None:
                accepted.append(entry)
            else:
                out.append(fx.ContributionRejected(rnd.number, peer, reason))
            if until is not None:
                out.append(fx.Ban(peer, until))
        if accepted:
            out.append(fx.ContributionsAccepted(rnd.number, tuple(p for p, _ in accepted)))
        count = len(accepted) + (1 if rnd.own is not None else 0)
        outcome = "skipped"
        if count >= self.config.min_peers and count > 0:
            # (peer, tensors, flat, weight, subnet, flat array), ourselves included, in
            # peer-id order: every node that accepted the same set sums in the same order,
            # so replicas that saw the same contributions stay bit-identical. ``accepted``
            # is in that order already: only our own entry is placed.
            entries = [
                (p, c.tensors, check.flat, float(c.dataset_size), net, check.flat_np)
                for p, (c, net, check) in accepted
            ]
            if rnd.own is not None:
                own = (
                    self.node_id,
                    rnd.own,
                    own_check.flat if own_check is not None else None,
                    float(rnd.own_weight),
                    self._self_subnet,
                    own_check.flat_np if own_check is not None else None,
                )
                insort(entries, own, key=itemgetter(0))
            contributors = [e[0] for e in entries]
            rule = self._rule
            capped = influence_weights(
                [e[3] for e in entries],
                [e[4] for e in entries],
                self.config.subnet_cap,
                rule.robust,
                [copies.get("" if e[0] == self.node_id else e[0]) for e in entries]
                if copies
                else (),
            )
            if rule.robust:
                flat = [e[5] for e in entries if e[5] is not None]
                seed = bucket_seed(rnd.number, contributors) if rule.seeded else 0
                if len(flat) == len(entries):  # every row is its check's own array
                    combined = shared_aggregate(
                        rule, flat, capped, seed, lambda: aggregate(rule, flat, capped, seed)
                    )
                else:
                    flat = [
                        self.spec.flatten(e[1]).numpy() if e[5] is None else e[5] for e in entries
                    ]
                    combined = aggregate(rule, flat, capped, seed)
                avg = self.spec.unflatten(torch.from_numpy(combined))
            elif len(rows := [e[2] for e in entries if e[2] is not None]) == len(entries):
                avg = self.spec.unflatten(weighted_average_flat(rows, capped))  # compact model
            else:
                avg = weighted_average([e[1] for e in entries], capped)
            out.append(fx.ApplyAverage(rnd.number, rnd.kind, avg, tuple(contributors), False))
            outcome = "average"
            self.progress = max(self.progress, rnd.number + 1)
        elif rnd.own is not None:
            out.append(fx.ApplyAverage(rnd.number, rnd.kind, rnd.own, (self.node_id,), True))
            outcome = "fallback"
        out.append(fx.RoundClosed(rnd.number, trigger, outcome, count, rnd.opened_at, now))
        return out + self._open_round(rnd.number + 1, now)

    # -- group rounds (strategy "group"; the theory is in group.py) ---------------------

    def _start_group(self, rnd: OpenRound, check: TensorCheck, now: float) -> Effects | None:
        """Begin the reduce-scatter among the round's expected contributors and us (None:
        too few for a group; the round goes flat)."""
        live = set(self.peers.live_peers())
        everyone = (rnd.expected & live) | {self.node_id}
        members = subgroup(list(everyone), self.node_id, rnd.number, self.config.group_size)
        if len(members) < max(2, self.config.min_peers):
            return None
        if len(everyone) == 2:
            # Two contributors in all: a reduce-scatter moves no fewer bytes than a flat
            # exchange (half out, half back) plus the forced audit's half, and takes two
            # transfer phases instead of one; a flat exchange sends the whole update once
            # each way and both sides average the same two rows in the same order (the same
            # bits). Measured, 124 MB fp32 on loopback: flat 269 vs group 119 MB/s per peer.
            # A 2-member subgroup of a larger round stays a group (flat would go to all).
            return None
        if any(m in rnd.admitted for m in members):
            # A member's whole update came while ours was still training: its group went
            # flat, so ours could never finish (it would only wait for the group deadline).
            # Go flat at once, as ``_admit`` does for a group already started.
            return None
        flat = check.flat_np
        if flat is None:
            assert rnd.own is not None
            flat = self.spec.flatten(rnd.own).numpy()
        g = GroupRound(
            rnd.number,
            rnd.kind,
            self.node_id,
            members,
            np.ascontiguousarray(flat, dtype=np.float32),
            rnd.own_weight,
            self._rule,
            functools.partial(self._weigh_group, rnd.kind),
            self.config.group_audit,
            self._judge.hostile_lately(members) if rnd.kind == "grad" else (),
            self._rng,
            out=self.average_out(self.spec.numel),
        )
        self._group = g
        # Stop waiting halfway to the round deadline: time left for the flat fallback.
        wait = max(0.0, rnd.opened_at + self.config.round_timeout - now) / 2
        out: Effects = [fx.SetTimer(TimerKey(GROUP_TIMER, rnd.number), now + wait)]
        g.start(out)
        for peer, msg in self._group_early.pop(rnd.number, []):
            g.handle(peer, msg, out)
        return out + self._group_step(now)

    def _weigh_group(
        self,
        kind: UpdateKind,
        names: Sequence[str],
        sizes: Sequence[int],
        summaries: Sequence[UpdateSummary],
        outvoted: Collection[str],
    ) -> tuple[dict[str, RejectReason], list[float]]:
        """A group round's verdicts and weights (group.Weigh). They depend only on what every
        member holds alike (the committed facts and votes), so all members reach the same
        ones: the history-free judge (validation.judge_pool), copies counted once, and the
        members the others' memories outvoted. On the side, the round's direction scores and
        replays go into this node's memory, which votes in the next group rounds."""
        pool = list(zip(names, summaries, strict=True))
        subnets = {m: self._subnet(m) for m in names}
        copies = self._pool_copy_labels(kind, pool)
        judged, scores = judge_pool(self.config, kind, pool, subnets, copies)
        if kind == "grad":
            for m, summary in pool:
                if m != self.node_id and self._judge.replayed(m, summary.fingerprint):
                    scores[m] = min(scores.get(m, 0.0), REPLAY_SCORE)
        self._judge.remember_scores(scores)
        for m in sorted(outvoted):
            judged.setdefault(m, RejectReason.DIRECTION)
        kept = [(m, x) for m, x in zip(names, sizes, strict=True) if m not in judged]
        weights = influence_weights(
            [float(x) for _, x in kept],
            [subnets[m] for m, _ in kept],
            self.config.subnet_cap,
            self._rule.robust,
            [copies.get(m) for m, _ in kept] if copies else (),
        )
        return judged, weights

    def _subnet(self, peer: str) -> str:
        if peer == self.node_id:
            return self._self_subnet
        rec = self.peers.get(peer)
        return rec.subnet if rec is not None else "unknown"

    def _on_group_message(self, peer: str, msg: GroupMessage, now: float) -> Effects:
        if not self.round <= msg.round <= self.round + self.config.future_window:
            return []  # a closed round's, or too far ahead: costs nothing to drop
        if isinstance(msg, Piece) and not msg.audit:
            remember(self._contributed, peer, max(msg.round, self._contributed.get(peer, -1)))
        g = self._group
        if g is not None and g.number == msg.round:
            out: Effects = []
            g.handle(peer, msg, out)
            return out + self._group_step(now)
        rnd = self._open
        if rnd is not None and rnd.number == msg.round and rnd.own is not None:
            return []  # our round went flat (or never formed a group)
        slot = self._group_early.setdefault(msg.round, [])
        if len(slot) < 4 * self.config.max_buffered_per_round:  # a piece, slice, request, verdict
            slot.append((peer, msg))
        return []

    def _group_step(self, now: float) -> Effects:
        """Act on what the group round found: verdicts, then degrade, finish or wait."""
        g = self._group
        assert g is not None
        out: Effects = []
        for peer, reason, proven in g.punish:
            out.append(fx.ContributionRejected(g.number, peer, reason))
            until = (
                self.reputation.convict(peer, now)
                if proven
                else self.reputation.record(peer, reason, now)
            )
            if until is not None:
                out.append(fx.Ban(peer, until))
        g.punish.clear()
        if g.failed:
            return out + self._degrade(g, now)
        if g.complete():
            return out + self._finish_group(g, now)
        return out

    def _group_lost(self, peers: Iterable[str], now: float) -> Effects:
        """Members gone mid-round: the group cannot finish; degrade without them."""
        g = self._group
        gone = [p for p in peers if g is not None and g.owes(p)]
        if g is None or not gone:
            return []
        g.bad.update(gone)
        g.failed = g.failed or "gone"
        return self._group_step(now)

    def _on_send_failed(self, ev: SendFailed, now: float) -> Effects:
        """A group message could not reach a member still connected: that member cannot
        finish its part (a lost piece leaves its slice short), so degrade now, as for a
        member gone, instead of waiting for the group deadline. Nobody is counted out: the
        flat round is offered to every member, the unreachable one too (its stream may
        open again), and members that are still in the group follow when our flat
        contribution reaches them (``_admit``)."""
        g = self._group
        if g is None or g.number != ev.round or g.failed or ev.peer not in g.members:
            return []
        g.failed = "unreachable"
        return self._group_step(now)

    def _degrade(self, g: GroupRound, now: float) -> Effects:
        """The group cannot finish: a flat round among the members that sent their pieces
        (each sends its whole update; the round closes as flat rounds do, naming whom it
        averaged). Never a partial average of slices."""
        rnd = self._open
        assert rnd is not None and rnd.own is not None
        self._group = None
        survivors = [m for m in g.survivors() if m != self.node_id]
        rnd.expected = set(survivors)
        targets = tuple(m for m in g.members if m != self.node_id and m not in g.bad)
        out: Effects = [fx.CancelTimer(TimerKey(GROUP_TIMER, rnd.number))]
        if targets:
            own = Contribution(rnd.number, rnd.kind, self.dataset_size, rnd.own)
            out.append(fx.Send(targets, own))
        return out + self._maybe_close_on_quorum(now)

    def _finish_group(self, g: GroupRound, now: float) -> Effects:
        rnd = self._open
        assert rnd is not None
        self._open = self._group = None
        self._transition(Trigger.CLOSE)
        avg = self.spec.unflatten(torch.from_numpy(g.average()))
        self.progress = max(self.progress, rnd.number + 1)
        contributors = g.contributors()
        accepted = tuple(p for p in contributors if p != self.node_id)
        for peer in accepted:
            self.reputation.record(peer, None, now)  # as a flat close records its accepted
        out: Effects = [
            fx.CancelTimer(TimerKey(GROUP_TIMER, rnd.number)),
            fx.CancelTimer(TimerKey(ROUND_TIMER, rnd.number)),
        ]
        if accepted:
            out.append(fx.ContributionsAccepted(rnd.number, accepted))
        out += [
            fx.ApplyAverage(rnd.number, rnd.kind, avg, contributors, False),
            fx.RoundClosed(rnd.number, "group", "average", len(contributors), rnd.opened_at, now),
        ]
        return out + self._open_round(rnd.number + 1, now)

    # -- timers -----------------------------------------------------------------------

    def _on_timer(self, ev: TimerFired, now: float) -> Effects:
        key = ev.key
        if key.name == ROUND_TIMER:
            if self._open is not None and self._open.number == key.round:
                return self._close(now, "timeout")
            return []
        if key.name == HEARTBEAT_TIMER:
            return self._on_heartbeat_tick(now)
        if key.name == GROUP_TIMER:
            g = self._group
            if g is not None and g.number == key.round and not g.failed:
                g.failed = "timeout"
                return self._group_step(now)
            return []
        if key.name == SYNC_TIMER and self._sync is not None and self._sync.nonce == key.round:
            return self._finish_sync(now, self._decide_sync(self._sync))
        waiting = self.phase is Phase.WAITING_FOR_PEERS
        if key.name == START_TIMER and waiting and self.config.start_deadline > 0:
            # Proceed alone: rounds fall back (and do not count) until members arrive.
            out: Effects = [fx.StartedRounds(self.round, self.members(), "deadline")]
            return out + self._begin(now)
        return []

    def _on_heartbeat_tick(self, now: float) -> Effects:
        out: Effects = [
            fx.SetTimer(TimerKey(HEARTBEAT_TIMER), now + self.config.heartbeat_interval)
        ]
        silent = self.peers.expire(now)
        out += [fx.Evict(p, "silent") for p in silent]
        out += self._group_lost(silent, now)
        if self._open is not None:
            self._stop_expecting(self._open.expected.difference(self.peers.live_peers()))
        if self.config.dial_peers:
            # Advertised peers first, then evicted ones (they may be back). One budget per
            # tick, whoever sends how many heartbeats: strangers cannot make us dial more.
            learned = list(self._learned().items())
            self._to_dial, self._to_dial_count = [], 0
            dead = [(p, self._hint(p)) for p in self.peers.dead_peers()]
            out += self._dials(learned + dead, now)
        training = self.phase in (Phase.TRAINING, Phase.COLLECTING)
        if training:
            self._early_params()  # before the heartbeat goes out: it announces the round
        out += self._send_heartbeat(now)
        if training and self._sync is None:
            out += self._check_lag_and_drift(now)
        return out

    def _early_params(self) -> None:
        """Bring a parameter round forward when the swarm itself has split in state.

        Why: after a partition heals, each half's replicas agree with each other and not with
        the other half. State sync cannot realign them (a node asks a few peers and adopts
        whichever half holds the majority of its responders: about half the nodes swap
        sides), and the next scheduled parameter round may be up to ``param_sync_every``
        rounds away; a parameter round averages everyone. So: when at least a quarter (and at
        least two: one drifted node is state sync's job) of the same-round sketches a node
        hears, its own included, lie beyond ``drift_bound`` from their median, it schedules
        a parameter round ``EARLY_AHEAD`` rounds ahead and announces it in its heartbeats
        (measured on a 16-node split healed after 10 rounds, seeds 1-10: back under
        drift_bound 4-5 rounds after the heal, 4-6 without). Every node that hears an
        announcement from a quarter of its live peers takes it (the earliest, if it hears
        several; ``_adopt_announced``) and announces it in turn: the round kind must be the
        same swarm-wide, or the round's contributions are refused as the wrong kind. A
        minority of liars cannot schedule one; liars that pass the quorum get at most one
        parameter round per ``early_params_gap`` rounds (a round of averaged parameters
        instead of an optimizer step), never a stalled swarm. The alarm is only looked at
        for ``early_params_gap`` rounds after an evicted peer came back (what a healed
        partition looks like): a steady swarm pays nothing for it.
        """
        gap = self.config.early_params_gap
        if gap == 0 or self._early > self.round:
            return
        if self._returned < 0 or self.round > self._returned + gap:
            return  # no evicted peer came back lately: nothing can have healed
        # The sketches of one round: the round most live peers last described (our own is
        # usually a round ahead of what peers last heartbeated), ours if it is that round.
        # Of at most EARLY_SAMPLE peers spread over the sorted ids: this runs on every tick,
        # and a median over every peer of a flat 1,000-node swarm would cost milliseconds.
        live = self.peers.live_peers()
        by_round: dict[int, list[Sketch]] = {}
        for p in live[:: max(1, len(live) // EARLY_SAMPLE)][:EARLY_SAMPLE]:
            r = self.peers.get(p)
            if r is not None and r.sketch_round >= 0 and r.sketch:
                by_round.setdefault(r.sketch_round, []).append(r.sketch)
        if not by_round:
            return
        common = max(by_round, key=lambda k: (len(by_round[k]), k))
        everyone = by_round[common] + ([self.sketch] if self.sketch_round == common else [])
        if len(everyone) < 3:
            return
        bound = self.config.drift_bound
        centre = median_sketch(everyone)
        far = sum(1 for s in everyone if sketch_distance(s, centre) > bound)
        if far >= 2 and 4 * far >= len(everyone):
            self._schedule_params(self.round + EARLY_AHEAD)

    def _note_return(self, peer: str) -> None:
        """Remember when an evicted peer comes back: the split alarm looks only then."""
        rec = self.peers.get(peer)
        if rec is not None and not rec.live:
            self._returned = self.round

    def _adopt_announced(self) -> None:
        """Adopt the earliest early parameter round that a quarter of the live peers (at
        least two) announce, at or before it: the same share of the swarm that raises the
        alarm (``_early_params``). One announcing peer is a claim nobody can check (issue 12,
        ``lying_heartbeat``: one liar of ten announcing every round cost +3% loss by turning
        one round in ``early_params_gap`` into parameter averaging); a real split is seen by
        nearly every node, so its announcements reach the quorum at once."""
        live = self.peers.live_records()
        window = range(self.round + 1, self.round + EARLY_AHEAD + 1)
        ahead = sorted(r.param_round for r in live if r.param_round in window)
        for backers, number in enumerate(ahead, start=1):
            if backers >= 2 and 4 * backers >= len(live):
                self._schedule_params(number)
                return

    def _schedule_params(self, number: int) -> None:
        """Make round ``number`` (ours or announced) a parameter round, if it is near ahead,
        earlier than the one already scheduled, no scheduled one comes as soon, and none was
        less than ``early_params_gap`` rounds ago."""
        gap = self.config.early_params_gap
        if gap == 0 or not self.round < number <= self.round + EARLY_AHEAD:
            return  # far-future announcements are moot: a liar's 10^9 changes nothing
        if self.round < self._early <= number:
            return
        if self._last_params >= 0 and self._last_params > self.round - gap:
            return
        every = self.config.param_sync_every
        if any(update_kind(r, every) == "params" for r in range(self.round + 1, number + 1)):
            return
        self._early = number

    def _check_lag_and_drift(self, now: float) -> Effects:
        records = [r for r in self.peers.live_records() if r.round >= 0]
        if not records:
            return []
        rounds = sorted(r.round for r in records)
        if rounds[len(rounds) // 2] >= self.round + self.config.lag_rounds:
            return self._begin_sync("lag", now)
        peers_here = [
            r.sketch for r in records if r.sketch_round == self.sketch_round >= 0 and r.sketch
        ]
        if len(peers_here) < 2 or not self.sketch:
            return []
        distance = sketch_distance(self.sketch, median_sketch(peers_here))
        out: Effects = [fx.DriftObserved(self.sketch_round, distance, len(peers_here))]
        if distance > self.config.drift_bound:
            out += self._begin_sync("drift", now)
        return out

    # -- state sync -------------------------------------------------------------------

    def _begin_sync(self, reason: str, now: float) -> Effects:
        """Ask peers for their state. At start-up rounds wait for the answer (SYNCING);
        later syncs run beside the rounds, so a failed or slow sync costs nothing."""
        live = self.peers.live_peers()
        if not live or self._sync is not None:
            return []
        asked = tuple(sorted(pick(self._rng, live, self.config.sync_fanout)))
        nonce = self._rng.getrandbits(62)
        self._sync = _PendingSync(nonce, reason, asked, {})
        if self.phase in (Phase.IDLE, Phase.WAITING_FOR_PEERS):
            self._transition(Trigger.SYNC_BEGIN)
        return [
            fx.SyncStarted(reason, asked),
            fx.Send(asked, StateRequest(nonce)),
            fx.SetTimer(TimerKey(SYNC_TIMER, nonce), now + self.config.sync_timeout),
        ]

    def _on_state_response(self, peer: str, resp: StateResponse, now: float) -> Effects:
        sync = self._sync
        if sync is None or resp.nonce != sync.nonce or peer not in sync.asked:
            return []  # unsolicited: ignore, costs nothing
        sync.responses.setdefault(peer, resp)
        if len(sync.responses) < len(sync.asked):
            return []
        decision = self._decide_sync(sync)
        unanimous = decision is not None and decision.agreeing == decision.responders
        if not unanimous and not sync.widened:
            more = self._widen(sync)
            if more:
                return more
        return [
            fx.CancelTimer(TimerKey(SYNC_TIMER, sync.nonce)),
            *self._finish_sync(now, decision),
        ]

    def _widen(self, sync: _PendingSync) -> Effects:
        """Responders that disagree: ask as many peers again, once, and decide on all.

        Why: the agreeing group needs only a majority of the responders, so liars who agree
        with each other win whenever they are most of the few peers asked (issue 12,
        ``poisoned_sync``: both attackers of ten among the three asked, about one sync in
        twelve, and nothing the joiner can check tells a crafted state from a real one).
        Honest replicas in step answer alike, so a split answer is the evidence; asking
        ``sync_fanout`` more peers makes the liars a minority again unless they are a
        majority of everyone asked. It costs a second set of state transfers only when
        answers disagree (at most once per sync: a liar can double a sync, not stall it)."""
        rest = [p for p in self.peers.live_peers() if p not in sync.asked]
        if not rest:
            return []
        extra = tuple(sorted(pick(self._rng, rest, self.config.sync_fanout)))
        sync.asked += extra
        sync.widened = True
        return [fx.Send(extra, StateRequest(sync.nonce))]

    def _decide_sync(self, sync: _PendingSync) -> SyncDecision | None:
        c = self.config
        return decide(sync.responses, self.spec, c.drift_bound, c.sync_moment_bound, c.norm_factor)

    def _finish_sync(self, now: float, decision: SyncDecision | None) -> Effects:
        """Load ``decision``, what the responders agreed on (None: nothing to load)."""
        sync = self._sync
        assert sync is not None
        self._sync = None
        waiting = self.phase is Phase.SYNCING
        if waiting:
            self._transition(Trigger.SYNC_END)
        if decision is not None and decision.round + STALE_SYNC_ROUNDS < self.round:
            # Answers that waited for the sync timeout (peers that went quiet: a partition)
            # describe the swarm as it was then: loading them would throw our rounds away.
            decision = None
        if decision is None:
            out: Effects = [fx.SyncFinished(False, self.round, len(sync.responses), 0)]
            return out + (self._open_round(self.round, now) if waiting else [])
        resume = max(decision.round, self.round)
        self.progress = max(self.progress, resume)  # the swarm's averaged state, loaded
        out = [
            fx.LoadState(
                resume, decision.tensors, decision.digest, decision.outer, decision.moments
            ),
            fx.SyncFinished(True, resume, decision.responders, decision.agreeing),
        ]
        if waiting:
            return out + self._open_round(resume, now)
        if resume > self.round:
            return out + self._abandon_round(now) + self._open_round(resume, now)
        return out

    def _abandon_round(self, now: float) -> Effects:
        """Leave the open round without averaging: we are jumping ahead to the swarm."""
        rnd = self._open
        if rnd is None:
            return []
        self._open = self._group = None
        self._transition(Trigger.JUMP)
        return [
            fx.CancelTimer(TimerKey(ROUND_TIMER, rnd.number)),
            fx.RoundClosed(rnd.number, "sync", "abandoned", 0, rnd.opened_at, now),
        ]

    # -- helpers ----------------------------------------------------------------------

    def _transition(self, trigger: Trigger) -> None:
        self.phase = next_phase(self.phase, trigger)


# Dispatch by event type. A class-level table of plain functions, not bound methods stored on
# the node: those would make every node a reference cycle, which only the cyclic GC can free
# (the simulator turns that GC off while it runs, see sim/driver.py).
_HANDLERS: dict[type[Any], Callable[[ProtocolNode, Any, float], Effects]] = {
    PeerConnected: ProtocolNode._on_connected,
    PeersFound: ProtocolNode._on_peers_found,
    PeerDisconnected: ProtocolNode._on_disconnected,
    MessageReceived: ProtocolNode._on_message,
    WireRejected: ProtocolNode._on_wire_rejected,
    SendFailed: ProtocolNode._on_send_failed,
    TimerFired: ProtocolNode._on_timer,
    LocalUpdateReady: ProtocolNode._on_local_update,
}
