"""Effects: everything a node asks its driver to do, as small immutable values.

The driver executes them in order. Sending never blocks the core: a driver that cannot reach
a peer just drops the send (the round timeout and the eviction timer cover the loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm_tune.runtime.protocol.events import TimerKey
from swarm_tune.runtime.protocol.messages import Message
from swarm_tune.runtime.protocol.moments import Moments
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.tensors import TensorDict, UpdateKind


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver one message to each of ``peers`` (encode once, send many)."""

    peers: tuple[str, ...]
    message: Message


@dataclass(frozen=True, slots=True)
class Dial:
    """Connect to ``peer`` (not connected now), reachable per ``hint`` — the dial hint the
    peer declared for itself (a multiaddr in the real runtime; the node id in the sim) or
    one that another peer passed on. A hint is only a route: the connection still proves
    the peer id."""

    peer: str
    hint: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    key: TimerKey
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: TimerKey


@dataclass(frozen=True, slots=True)
class TrainLocal:
    """Compute this node's update of ``kind`` for ``round``; answer with LocalUpdateReady."""

    round: int
    kind: UpdateKind


@dataclass(frozen=True, slots=True)
class ApplyAverage:
    """Apply the round's result: an average (``fallback`` False) or own update (True)."""

    round: int
    kind: UpdateKind
    update: TensorDict = field(repr=False, compare=False)
    contributors: tuple[str, ...]
    fallback: bool


@dataclass(frozen=True, slots=True)
class LoadState:
    """Replace parameters with a state agreed on by peers; continue at ``round``."""

    round: int
    tensors: TensorDict = field(repr=False, compare=False)
    digest: str
    outer: TensorDict = field(default_factory=dict, repr=False, compare=False)  # see StateResponse
    # The agreeing responders' mean optimizer moments (None: keep our own; see moments.py).
    moments: Moments | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ServeState:
    """A peer asked for our state: answer ``peer`` with a StateResponse(nonce)."""

    peer: str
    nonce: int


@dataclass(frozen=True, slots=True)
class Evict:
    peer: str
    reason: str  # "silent" | "goodbye" | "disconnected"


@dataclass(frozen=True, slots=True)
class Ban:
    peer: str
    until: float


# --- observations: for metrics, logs and the simulator's recorder --------------------


@dataclass(frozen=True, slots=True)
class ContributionsAccepted:
    """The contributions of ``peers`` (peer-id order) passed round ``round``'s close.

    One effect per close, not one per contribution: a flat round's close accepts every other
    node's contribution, so per-contribution effects cost the simulator N^2 objects a round
    for what drivers only count."""

    round: int
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContributionRejected:
    round: int
    peer: str
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class RoundClosed:
    round: int
    trigger: str  # "quorum" | "timeout" | "sync"
    outcome: str  # "average" | "fallback" | "skipped" | "abandoned"
    contributors: int
    opened_at: float
    closed_at: float


@dataclass(frozen=True, slots=True)
class DriftObserved:
    """Our sketch distance to the peers' median sketch, measured at a heartbeat."""

    round: int
    distance: float
    peers: int


@dataclass(frozen=True, slots=True)
class SyncStarted:
    reason: str  # "join" | "lag" | "drift"
    asked: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WaitingForPeers:
    """The node wants to start but has fewer than ``need`` members (itself included)."""

    members: int
    need: int
    deadline: float | None  # when it proceeds anyway (None: it waits for peers forever)


@dataclass(frozen=True, slots=True)
class StartedRounds:
    """The node left WAITING_FOR_PEERS: ``reason`` "peers" (enough members) or "deadline"."""

    round: int
    members: int
    reason: str


@dataclass(frozen=True, slots=True)
class SyncFinished:
    ok: bool
    round: int
    responders: int
    agreeing: int


Effect = (
    Send
    | Dial
    | SetTimer
    | CancelTimer
    | TrainLocal
    | ApplyAverage
    | LoadState
    | ServeState
    | Evict
    | Ban
    | ContributionsAccepted
    | ContributionRejected
    | RoundClosed
    | DriftObserved
    | SyncStarted
    | SyncFinished
    | WaitingForPeers
    | StartedRounds
)
