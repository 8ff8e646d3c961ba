"""Events: everything that can happen *to* a node, as small immutable values.

Drivers translate the world into these (a decoded message from an authenticated peer, a timer
they were asked to set, the learner finishing a step). ``now`` is never part of an event; it is
passed alongside to ``ProtocolNode.handle`` so the core never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm_tune.runtime.compression.codecs import Encoded
from swarm_tune.runtime.protocol.messages import Message
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.tensors import Sketch, TensorDict, UpdateKind


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """A transport connection to authenticated ``peer`` is open (see the admission handshake
    in ProtocolNode._on_connected). ``verified``: the world already knows it is a member of
    this run (the simulator's peers); a real transport says False and the peer becomes a
    member with its first verified message."""

    peer: str
    address: str  # remote IP, for the subnet cap
    verified: bool = True


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    peer: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A decoded message; ``peer`` is the *authenticated* sender, never a self-declared name.
    ``address``: the transport's remote IP when the driver knows it (used if this message
    admits the peer; see ProtocolNode._on_connected)."""

    peer: str
    message: Message
    address: str = ""


@dataclass(frozen=True, slots=True)
class WireRejected:
    """The driver's wire layer refused bytes from ``peer``: counts against its reputation."""

    peer: str
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A group message of round ``round`` (a piece, slice, audit request or verdict) could
    not be delivered to ``peer``, which is still connected, after the driver's bounded
    retries. The simulator never loses a message to a live peer, so only the real driver
    feeds it; a peer that went away is ``PeerDisconnected`` instead."""

    peer: str
    round: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: TimerKey


@dataclass(frozen=True, slots=True)
class LocalUpdateReady:
    """The learner finished the work a ``TrainLocal`` effect asked for."""

    round: int
    kind: UpdateKind
    update: TensorDict = field(repr=False, compare=False)
    loss: float
    # Facts about the parameters *now*, for heartbeats and drift checks.
    digest: str
    sketch: Sketch
    # The update as the wire carries it when the run compresses (``update`` is then its
    # decoding, which is what this node itself averages); None = sent as is.
    encoded: Encoded | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class TimerKey:
    """Timers are named; setting a name again replaces the earlier deadline."""

    name: str  # "round", "heartbeat", "sync"
    round: int = 0


@dataclass(frozen=True, slots=True)
class PeersFound:
    """The driver's discovery service (the DHT's provider records for this run) names peers
    and the routes they published; the core decides whether to dial them."""

    peers: tuple[tuple[str, str], ...]  # (peer id, dial hint)


Event = (
    PeerConnected
    | PeersFound
    | PeerDisconnected
    | MessageReceived
    | WireRejected
    | SendFailed
    | TimerFired
    | LocalUpdateReady
)
