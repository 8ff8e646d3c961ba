"""Typed protocol messages, as the core sees them after the wire layer verified them.

Why separate from the wire format: the core reasons about *what* was said (a contribution for
round r, a heartbeat from a peer at round r with this digest), never about bytes. The wire
layer (runtime/wire) turns these into signed, versioned, chunked SWRM frames and back; the
simulator passes them as objects and charges their ``wire_size`` to its links.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from swarm_tune.runtime.compression.codecs import Encoded
from swarm_tune.runtime.protocol.moments import Moments
from swarm_tune.runtime.protocol.summary import TensorCheck, check_tensors
from swarm_tune.runtime.protocol.tensors import ModelSpec, Sketch, TensorDict, UpdateKind


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness plus the facts peers need to judge drift and lag."""

    round: int
    dataset_size: int
    digest: str
    sketch: Sketch
    # Peer exchange: a few (peer_id, dial hint) pairs of live peers.
    known_peers: tuple[tuple[str, str], ...] = ()
    # The round whose *start* the digest and sketch describe: only sketches of the same
    # round are comparable (a single optimizer step moves parameters measurably).
    sketch_round: int = -1
    # How the sender says it can be reached (its multiaddr; "" = do not pass it on).
    dial: str = ""
    # An early parameter round the sender scheduled after a swarm-wide drift alarm (-1: none);
    # peers that see the drift too adopt the earliest one they hear (node.py, _early_params).
    param_round: int = -1


@dataclass(frozen=True, slots=True)
class Contribution:
    """One node's update for one round: a gradient, or its parameters on sync rounds."""

    round: int
    kind: UpdateKind
    dataset_size: int
    tensors: TensorDict = field(repr=False, compare=False)
    # The compressed form: what the wire carries and the simulator charges. A decoded
    # message from the wire has ``encoded`` and no tensors until the core decodes it
    # against its model (``decoded``); the sender's own object carries both.
    encoded: Encoded | None = field(default=None, repr=False, compare=False)
    # Memo of ``check(spec)``. Never on the wire: a decoded message starts without one. The
    # simulator hands one object to every target (and the sender checks it first), so a
    # contribution is flattened and finiteness-checked once, not once per receiver.
    _check: list[TensorCheck] = field(default_factory=list, init=False, repr=False, compare=False)

    def check(self, spec: ModelSpec) -> TensorCheck:
        """``check_tensors(spec, self.tensors)``, computed once per spec."""
        memo = self._check
        if memo and (memo[0].spec is spec or memo[0].spec == spec):
            return memo[0]
        verdict = check_tensors(spec, self.tensors)
        memo[:] = [verdict]
        return verdict


@dataclass(frozen=True, slots=True)
class StateRequest:
    """Ask a peer for its current round and parameters (late join, rejoin, drift)."""

    nonce: int


@dataclass(frozen=True, slots=True)
class StateResponse:
    nonce: int
    round: int
    digest: str
    sketch: Sketch
    tensors: TensorDict = field(repr=False, compare=False)
    # The learner's outer-optimizer state (DiLoCo's momentum, named like the parameters) a
    # joiner needs to step exactly as the swarm does; empty when the run keeps none.
    outer: TensorDict = field(default_factory=dict, repr=False, compare=False)
    # The responder's optimizer moments (Adam; see moments.py); None: it keeps none, or the
    # run does not carry them (``sync_moment_bound`` = 0).
    moments: Moments | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Goodbye:
    """Graceful leave: peers drop us now instead of waiting for the eviction timeout."""


# -- group rounds (strategy "group": reduce-scatter + all-gather, see group.py) ------------

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DataFacts:
    """What a group check reads of a message's float32 data: its digest, whether every
    entry is finite, its sum of squares. Computed by the receiver's own code, never read
    from the wire (the codec has no field for it): a driver computes it in a worker thread
    as the message lands (group.with_facts) so that the event loop does not hash 31 MB;
    without it (the simulator) the core computes the same function itself."""

    digest: str
    finite: bool
    square_sum: float


@dataclass(frozen=True, slots=True)
class Piece:
    """Reduce-scatter: the sender's slice ``index`` of its flat update, for that slice's
    owner (or, ``audit``, for an auditor that asked). ``manifest`` commits the sender to
    every one of its pieces (their digests, by slice): owners name these digests in what
    they return, and an auditor's evidence is checked against them. ``sums`` (each slice's
    sum of squares) and ``sample`` (the strided direction sample of the whole update) are
    what the close-time judge needs of a whole update; each owner checks the part that
    falls in its slice (group.py); ``votes`` the sender's memory of hostile directions."""

    round: int
    kind: UpdateKind
    members: tuple[str, ...]  # the group as the sender sees it (sorted)
    index: int
    dataset_size: int
    manifest: tuple[str, ...]
    sums: tuple[float, ...]
    votes: tuple[str, ...]  # members the sender's memory calls hostile (group.py)
    sample: F32 = field(repr=False, compare=False)
    data: F32 = field(repr=False, compare=False)
    audit: bool = False
    facts: DataFacts | None = field(default=None, repr=False, compare=False)  # of ``data``


@dataclass(frozen=True, slots=True)
class SliceResult:
    """All-gather: slice ``index`` aggregated by its owner with the run's rule, with the
    commitment that makes it checkable: (member, influence weight, piece digest) used, and
    every member's commitment as the owner received it (``commits``, members' order): the
    judge's inputs, so that a member who told owners different things is seen."""

    round: int
    kind: UpdateKind
    members: tuple[str, ...]
    index: int
    used: tuple[tuple[str, float, str], ...]
    commits: tuple[str, ...]
    digest: str  # of ``data``
    data: F32 = field(repr=False, compare=False)
    facts: DataFacts | None = field(default=None, repr=False, compare=False)  # of ``data``


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """An auditor of the round asks every member for its piece of slice ``index``, after
    the slice's owner committed to its result (so the owner cannot know in advance)."""

    round: int
    index: int


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """The auditor's finding on slice ``index`` (whose result had ``digest``). A failed
    audit carries its evidence: every member's piece, each checkable against the digests
    its sender committed to, so every receiver can recompute the slice itself."""

    round: int
    index: int
    ok: bool
    digest: str
    evidence: tuple[tuple[str, F32], ...] = field(default=(), repr=False, compare=False)


GroupMessage = Piece | SliceResult | AuditRequest | AuditVerdict
Message = (
    Heartbeat
    | Contribution
    | StateRequest
    | StateResponse
    | Goodbye
    | Piece
    | SliceResult
    | AuditRequest
    | AuditVerdict
)
