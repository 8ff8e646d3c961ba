"""The round state machine: phases, the transition table, and per-round bookkeeping.

Theory of operation (read this before changing anything in node.py):

A node is always in exactly one phase. Rounds are local: round r begins when round r-1 closed
here, and the node asks its learner for an update (TRAINING). Contributions from peers for r
are admitted while TRAINING or COLLECTING; once the node's own update arrives it is
COLLECTING. Round r closes exactly once, on the first of

* QUORUM  — own update present and at least ``quorum_count(expected)`` contributions, or
* TIMEOUT — the hard deadline ``opened_at + round_timeout`` (why a timeout beats waiting:
  over the internet some peer is always slow or gone, and waiting for it stalls everyone;
  a round that closes on time with most of the swarm loses little, a stalled one loses all).

On close the node averages (>= min_peers valid contributions), falls back to its own update
(fewer), or skips (no own update either, e.g. a straggler whose deadline passed), and the next
round begins immediately. Contributions for up to ``future_window`` rounds ahead are buffered
(peers are never perfectly in step); anything further ahead or already closed is refused.
Before its first round a node waits in WAITING_FOR_PEERS until ``min_peers`` swarm members,
itself included, are present (it cannot average with fewer, so counting rounds alone would
only produce fallbacks), or until ``start_deadline`` passes, after which it proceeds: its
rounds fall back until peers arrive, and only rounds it actually averaged count as campaign
progress (``ProtocolNode.progress``). A node that starts with ``catch_up`` then waits in
SYNCING for peers' state before its first round. Later syncs (lag, drift) run beside the
rounds; if one lands on a later round the open round is abandoned (JUMP: no average, no
second contribution) and the node continues at the swarm's round.

Transitions live in ``TRANSITIONS``; anything else is a bug in the core and raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.summary import TensorCheck
from swarm_tune.runtime.protocol.tensors import TensorDict, UpdateKind


class Phase(Enum):
    IDLE = "idle"
    WAITING_FOR_PEERS = "waiting_for_peers"
    TRAINING = "training"
    COLLECTING = "collecting"
    SYNCING = "syncing"
    STOPPED = "stopped"


class Trigger(Enum):
    WAIT = "wait"  # start requested, too few members yet
    START = "start"
    OWN_READY = "own_ready"
    CLOSE = "close"  # quorum or timeout; the next round starts in TRAINING
    JUMP = "jump"  # abandon the open round: a sync says the swarm is further ahead
    SYNC_BEGIN = "sync_begin"
    SYNC_END = "sync_end"
    STOP = "stop"


TRANSITIONS: dict[tuple[Phase, Trigger], Phase] = {
    (Phase.IDLE, Trigger.WAIT): Phase.WAITING_FOR_PEERS,
    (Phase.IDLE, Trigger.START): Phase.TRAINING,
    (Phase.IDLE, Trigger.SYNC_BEGIN): Phase.SYNCING,
    (Phase.WAITING_FOR_PEERS, Trigger.START): Phase.TRAINING,
    (Phase.WAITING_FOR_PEERS, Trigger.SYNC_BEGIN): Phase.SYNCING,
    (Phase.WAITING_FOR_PEERS, Trigger.STOP): Phase.STOPPED,
    (Phase.TRAINING, Trigger.OWN_READY): Phase.COLLECTING,
    (Phase.TRAINING, Trigger.CLOSE): Phase.TRAINING,
    (Phase.COLLECTING, Trigger.CLOSE): Phase.TRAINING,
    (Phase.TRAINING, Trigger.JUMP): Phase.TRAINING,
    (Phase.COLLECTING, Trigger.JUMP): Phase.TRAINING,
    (Phase.SYNCING, Trigger.SYNC_END): Phase.TRAINING,
    (Phase.IDLE, Trigger.STOP): Phase.STOPPED,
    (Phase.TRAINING, Trigger.STOP): Phase.STOPPED,
    (Phase.COLLECTING, Trigger.STOP): Phase.STOPPED,
    (Phase.SYNCING, Trigger.STOP): Phase.STOPPED,
}


class ProtocolStateError(RuntimeError):
    """The core tried a transition its table does not allow: a bug, not bad input."""


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    try:
        return TRANSITIONS[(phase, trigger)]
    except KeyError:
        raise ProtocolStateError(f"no transition from {phase.value} on {trigger.value}") from None


# An admitted contribution, its sender's subnet and its check (summary for the judge, flat
# vector for compact models). A plain tuple: a flat round admits N^2 of them, and a tuple is
# a fraction of a dataclass's construction cost.
Admitted = tuple[Contribution, str, TensorCheck]


@dataclass(slots=True)
class OpenRound:
    """Everything known about the round in progress."""

    number: int
    kind: UpdateKind
    opened_at: float
    own: TensorDict | None = None
    own_check: TensorCheck | None = None
    own_weight: int = 0
    admitted: dict[str, Admitted] = field(default_factory=dict)
    # Peers whose submission was refused on arrival: with ``admitted``, one per peer per round.
    refused: set[str] = field(default_factory=set)
    expected: set[str] = field(default_factory=set)  # live peers the quorum waits for
    quorum: tuple[int, int] = (-1, 0)  # (len(expected), contributions that close the round)


def update_kind(round_number: int, param_sync_every: int) -> UpdateKind:
    """Every ``param_sync_every``-th round exchanges parameters instead of gradients."""
    if param_sync_every and round_number > 0 and round_number % param_sync_every == 0:
        return "params"
    return "grad"
