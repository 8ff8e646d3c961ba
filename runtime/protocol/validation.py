"""Is a contribution fit to be averaged? Structural checks on arrival, statistical at close.

Why two stages: shape, dtype, finiteness and a sane dataset size can be judged from one
message alone, so bad ones are refused the moment they arrive (and cost their sender
reputation). Whether a norm is an *outlier* or a direction is *hostile* is relative: it is
judged at round close against the round's own contributions (ours included, which we trust)
and a running median of norms accepted earlier. Judging at close means an attacker gains
nothing by being first.

The statistical rules:
* RMS norm above ``norm_factor`` x median(reference norms) is an outlier (scaled / noise).
* Direction: each update's cosine to the coordinate-wise median update (on a seeded
  coordinate sample, so it stays cheap for 124M-parameter models) is compared with the other
  cosines of the same round. Why relative: with small batches one honest gradient is mostly
  noise, and how much the honest updates agree shrinks as training converges (churn-30, batch
  16: honest cosines 0.30 +- 0.13 in the first rounds, 0.08 +- 0.13 by round 30). A fixed cut
  (cosine < -0.2) rejected 1.5% of the honest updates of a 50-round run (5,931), which cost
  honest peers reputation for converging. Standardised by the round's own centre (the median
  of the cosines' shortest half, so a large minority cannot drag it: ``_centre_spread``) and
  MAD, honest cosines score about N(0, 1) early and late alike: an update is hostile when it points
  against the median (cosine < 0) AND scores below ``-Z_SINGLE``, or when the peer's recent
  scores average below ``-Z_MEAN`` (a sign-flipper scores about -2 x mean/spread each round,
  so the average catches it within a few rounds while an honest peer's average has about a
  third of the single-round spread). "Recent" is a moving average with weight
  ``SCORE_WEIGHT`` (the plain mean of the first few): one (count, average) pair per peer, not a
  window, because a flat node judges every other node and a window of floats per peer costs
  ~4x the memory. Rounds with fewer than ``ROBUST_POOL`` updates (gossip) have no
  trustworthy spread and keep the fixed cut ``MIN_COSINE``.
  Colluders cannot vouch for one another: the members of a group that may collude (one
  subnet, or copies of one update: ``_colluders``) are each judged against the pool without
  the rest of their group, holding one unit of pull in it as every other update does, and
  placed on the pool's scale by their standing among the others' cosines to that same
  reference (a smaller reference is noisier, so a raw cosine to it reads low for anyone:
  honest peers behind one /24 scored -5 to -30 before this placement). Why: a median's
  coordinates lean towards every row in it, so k copies of one flipped update lift each
  other's cosine. Measured (robustness matrix, 20%, two Sybils on one /24 sending x-3 flips
  with 0.1-0.3 x RMS of noise each, too much for near-duplicate collapsing): their cosine to
  the whole pool's median was +0.11 (honest 0.28 +- 0.05), so no round rejected them and
  they cost the default rule +6%; judged apart, they are rejected from the first round
  (+0.2%). A group that is not a minority of the pool, or leaves fewer than two others (a
  loopback swarm is one /24), is judged with the pool as before.
  What this cannot do: when honest updates barely agree (mean cosine << spread), a flipped one
  is indistinguishable from an honest one - and then it also removes almost no signal.
* The same update sent again for another round (bit-identical sample) is a replay.

Each update is reduced once to an ``UpdateSummary`` (summary.py) when it is first checked;
the judge only ever looks at summaries, so a close costs a few small vector operations.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from swarm_tune.runtime.aggregation.coordinate import weighted_median, weighted_medians_with_each
from swarm_tune.runtime.aggregation.near_duplicates import MEMO_MIN_POOL, find_root, join_roots
from swarm_tune.runtime.aggregation.rules import collapse_duplicates
from swarm_tune.runtime.aggregation.weighted import subnet_capped_weights
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.peer_memory import has_room, remember
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.shared_work import ENTRIES, IdentityMemo
from swarm_tune.runtime.protocol.summary import TensorCheck, UpdateSummary
from swarm_tune.runtime.protocol.tensors import ModelSpec, UpdateKind

MAX_DATASET_SIZE = 10**12
MIN_COSINE = -0.2  # small pools: honest gradients of one model point roughly the same way
ROBUST_POOL = 8  # updates needed for a round's own median/MAD of cosines
Z_SINGLE = 3.5  # robust standard deviations below the round's centre: hostile at once
Z_MEAN = 1.5  # ... on average over the peer's recent rounds: hostile
SCORE_WEIGHT = 0.125  # of the newest score in a peer's moving average (~15 rounds of memory)
WEIGHT_FLOOR = round(1 / SCORE_WEIGHT)  # from this count on, 1 / count <= SCORE_WEIGHT
DIRECTION_EVIDENCE = 3  # scores needed before their average is trusted (with 4, 3 of 10
# sign-flippers cost +2.8% instead of +1.9%; with 2, two honest group members were voted out;
# where verdicts ban - the weighted mean - one more: 3 banned an honest mimic victim, 8 judges)
MIN_SPREAD = 1e-3  # a floor for the MAD: identical updates have none
REPLAY_MEMORY = 4  # fingerprints remembered per peer
REPLAY_SCORE = -2 * Z_SINGLE  # a group round's replay, in the direction memory (see replayed)


def check_structure(
    c: Contribution, spec: ModelSpec, expected_kind: UpdateKind
) -> tuple[RejectReason | None, TensorCheck | None]:
    """Verdict on one contribution in isolation (None = admissible), plus, when admissible,
    its check (summary for the judge, flat vector for compact models: reused at close)."""
    if c.kind != expected_kind:
        return RejectReason.WRONG_KIND, None
    if not 0 < c.dataset_size <= MAX_DATASET_SIZE:
        return RejectReason.BAD_SIZE, None
    check = c.check(spec)
    if check.mismatch == "shape":
        return RejectReason.SHAPE, None
    if check.mismatch == "dtype":
        return RejectReason.DTYPE, None
    if not check.finite:
        return RejectReason.NON_FINITE, None
    return None, check


class CloseTimeJudge:
    """Keeps the statistics that close-time verdicts need, per update kind."""

    def __init__(self, config: ProtocolConfig) -> None:
        self._cfg = config
        self._norms: dict[UpdateKind, deque[float]] = {
            "grad": deque(maxlen=config.norm_history),
            "params": deque(maxlen=config.norm_history),
        }
        # Tuples, not deques: a node may track thousands of peers, and a 4-slot deque costs
        # ~7x the memory of a 4-tuple (10,000 simulated nodes: gigabytes).
        self._fingerprints: dict[str, tuple[int, ...]] = {}
        self._scores: dict[str, tuple[int, float]] = {}  # peer -> (count, moving average)
        # Where direction verdicts ban (the weighted mean), one more score first.
        self._evidence = DIRECTION_EVIDENCE + 1 if config.direction_bans else DIRECTION_EVIDENCE

    def judge(
        self,
        kind: UpdateKind,
        own: UpdateSummary | None,
        candidates: Sequence[tuple[str, UpdateSummary]],
        subnets: Mapping[str, str] | None = None,
        copies: Mapping[str, int | None] | None = None,
    ) -> dict[str, RejectReason]:
        """Verdicts for peers' candidates; ``own`` informs the statistics but is trusted.

        ``subnets`` (peer -> subnet, ``""`` for our own) weighs the direction statistics
        with the subnet cap; a peer without an entry counts as its own subnet. ``copies``
        (same keys: near_duplicates.duplicate_labels) makes copies of one update count once
        in those statistics; without it, bit-identical updates do."""
        replays = self._replays([(p, s.fingerprint) for p, s in candidates])
        rejected: dict[str, RejectReason] = {
            peer: RejectReason.REPLAY
            for (peer, _), replay in zip(candidates, replays, strict=True)
            if replay
        }
        own_norm = own.rms if own is not None else None
        norms = [s.rms for _, s in candidates]
        bound = self._norm_bound(kind, own_norm, norms)
        if bound is not None:
            for (peer, _), norm in zip(candidates, norms, strict=True):
                if norm > bound and peer not in rejected:
                    rejected[peer] = RejectReason.NORM
        if kind == "grad" and self._cfg.judges_direction:
            kept = [(p, s) for p, s in candidates if p not in rejected] if rejected else candidates
            pool = [s for _, s in kept] + ([own] if own is not None else [])
            nets = subnets or {}
            groups = [nets.get(p, p) for p, _ in kept] + ([nets.get("", "")] if own else [])
            labels = (
                [copies.get(p) for p, _ in kept] + ([copies.get("")] if own else [])
                if copies
                else [s.fingerprint for s in pool]
            )
            cosines, centre, spread = _pool_directions(pool, labels, groups, self._cfg)
            for peer in self._hostile(kept, cosines, centre, spread):
                rejected[peer] = RejectReason.DIRECTION
        accepted = (
            [n for (p, _), n in zip(candidates, norms, strict=True) if p not in rejected]
            if rejected
            else norms
        )
        if own_norm is not None:
            accepted.append(own_norm)
        self._norms[kind].extend(accepted)
        return rejected

    def _norm_bound(
        self, kind: UpdateKind, own: float | None, current: list[float]
    ) -> float | None:
        reference = list(self._norms[kind])
        if own is not None:
            reference.append(own)
        if len(reference) < self._cfg.norm_warmup:
            # Too little history: lean on this round's median too (honest majority assumed).
            reference.extend(current)
        if len(reference) < max(2, self._cfg.norm_warmup // 2):
            return None
        reference.sort()
        median = reference[len(reference) // 2]
        return max(self._cfg.norm_floor, self._cfg.norm_factor * median)

    def _hostile(
        self,
        kept: Sequence[tuple[str, UpdateSummary]],
        cosines: list[float],
        centre: float,
        spread: float,
    ) -> list[str]:
        """Peers whose updates point against the round's median (``cosines``: pool order,
        ``kept`` first, our own last; empty when the median is undefined; ``centre`` and
        ``spread`` of the cosines: see ``direction_statistics``)."""
        if not cosines:
            return []
        if len(cosines) < ROBUST_POOL:
            return [p for (p, _), c in zip(kept, cosines, strict=False) if c < MIN_COSINE]
        # One robust score per kept update (pool order: ``kept`` first, ours last).
        peers = [p for p, _ in kept]
        scores = [(cosine - centre) / spread for cosine in cosines[: len(peers)]]
        pool = len(cosines)
        return [
            peer
            for peer, cosine, against_lately in zip(
                peers, cosines, self._score_all(peers, scores), strict=False
            )
            # A robust pool's rule needs a negative cosine first: tested here, not per call.
            if against_lately or (cosine < 0.0 and _against_now(cosine, centre, spread, pool))
        ]

    def _score_all(self, peers: Sequence[str], scores: Sequence[float]) -> list[bool]:
        """Fold each peer's robust direction score into its moving average, in order; for
        each, True when the average says hostile (enough evidence, far below the centre)."""
        table = self._scores
        room = has_room(table, len(peers))
        out: list[bool] = []
        pop, append, evidence = table.pop, out.append, self._evidence
        for peer, score in zip(peers, scores, strict=True):
            count, average = pop(peer, (0, 0.0))
            count += 1
            # max(SCORE_WEIGHT, 1 / count), without the call: 1 / 8 is SCORE_WEIGHT itself.
            average += (score - average) * (SCORE_WEIGHT if count >= WEIGHT_FLOOR else 1.0 / count)
            if room:
                table[peer] = (count, average)
            else:
                remember(table, peer, (count, average))
            # Its rule needs a low average first: tested here, not per call (N per close).
            append(average < -Z_MEAN and _hostile_lately(count, average, evidence))
        return out

    def remember_scores(self, scores: Mapping[str, float]) -> None:
        """A group round's direction scores (judge_pool), folded into the same memory."""
        self._score_all(list(scores), list(scores.values()))

    def replayed(self, peer: str, fingerprint: int) -> bool:
        """Whether ``peer`` sent this update before (and remember it). A group round cannot
        reject on it (members' memories differ), so the node folds ``REPLAY_SCORE`` into the
        peer's direction memory: replays, round after round, become votes."""
        return self._replays(((peer, fingerprint),))[0]

    def hostile_lately(self, peers: Sequence[str]) -> tuple[str, ...]:
        """Which of ``peers`` this node's memory calls hostile (its votes in a group round)."""
        scores, evidence = self._scores, self._evidence
        return tuple(p for p in peers if _hostile_lately(*scores.get(p, (0, 0.0)), evidence))

    def _replays(self, updates: Sequence[tuple[str, int]]) -> list[bool]:
        """For each (peer, fingerprint) in order: did the peer send it before? Each is
        remembered (the last ``REPLAY_MEMORY`` per peer)."""
        table = self._fingerprints
        room = has_room(table, len(updates))
        out: list[bool] = []
        pop, append = table.pop, out.append
        for peer, fingerprint in updates:
            seen = pop(peer, ())
            replay = fingerprint in seen
            if not replay:
                seen = (*seen, fingerprint)[-REPLAY_MEMORY:]
            if room:
                table[peer] = seen
            else:
                remember(table, peer, seen)
            append(replay)
        return out


def judge_pool(
    cfg: ProtocolConfig,
    kind: UpdateKind,
    pool: Sequence[tuple[str, UpdateSummary]],
    subnets: Mapping[str, str],
    copies: Mapping[str, int | None],
) -> tuple[dict[str, RejectReason], dict[str, float]]:
    """Verdicts on one round's pool from the pool alone (peer -> reason; members' order),
    and each judged update's robust direction score (pools of ``ROBUST_POOL`` or more) for
    the members' memories (``CloseTimeJudge.remember_scores``).

    Why not CloseTimeJudge: a group round's members must reach the same verdicts, or they
    weigh the slices differently and cannot agree on the average (group.py). The judge's
    history (norm reference, replay memory, moving direction scores) differs from node to
    node; this is the part of it that is a pure function of what every member holds: the
    norm bound from the round's median norm (an honest majority assumed), and the direction
    test against the pool's weighted median (copies counted once, then the subnet cap).
    The memory comes back as votes: group.py excludes a member that most members' memories
    call hostile, which every member also derives alike."""
    rejected: dict[str, RejectReason] = {}
    scores: dict[str, float] = {}
    norms = sorted(s.rms for _, s in pool)
    if len(norms) >= 2:
        bound = max(cfg.norm_floor, cfg.norm_factor * norms[len(norms) // 2])
        rejected.update((p, RejectReason.NORM) for p, s in pool if s.rms > bound)
    if kind == "grad" and cfg.judges_direction:
        kept = [(p, s) for p, s in pool if p not in rejected]
        labels = [copies.get(p) for p, _ in kept] if copies else [s.fingerprint for _, s in kept]
        groups = [subnets.get(p, p) for p, _ in kept]
        cosines, centre, spread = _pool_directions([s for _, s in kept], labels, groups, cfg)
        for (peer, _), cosine in zip(kept, cosines, strict=False):
            if len(cosines) >= ROBUST_POOL:
                scores[peer] = (cosine - centre) / spread
            if _against_now(cosine, centre, spread, len(cosines)):
                rejected[peer] = RejectReason.DIRECTION
    return rejected, scores


def _pool_directions(
    pool: list[UpdateSummary],
    labels: Sequence[int | None],
    groups: Sequence[str],
    cfg: ProtocolConfig,
) -> tuple[list[float], float, float]:
    """Cosines, centre and spread of a judged pool (copies once, subnet cap, colluders apart),
    with the centre the run's verdicts call for: the flat judge and judge_pool share it."""
    weights = _direction_weights(labels, groups, cfg.subnet_cap)
    return direction_statistics(
        pool, weights, _colluders(labels, groups), sharp=not cfg.direction_bans
    )


def _direction_weights(
    labels: Sequence[int | None], groups: Sequence[str], cap: float
) -> npt.NDArray[np.float64]:
    """Each pooled update's weight in the direction statistics: copies count once, then the
    subnet cap."""
    units = collapse_duplicates([1.0] * len(labels), labels)
    return np.asarray(subnet_capped_weights(units, groups, cap))


def _colluders(labels: Sequence[int | None], subnets: Sequence[str]) -> list[int] | None:
    """Each pooled update's group of possible colluders (equal ints: one group): the
    connected components of "same subnet" and "copies of one update". None when every
    update is alone (no subnet and no copy label shared): what ``direction_statistics``
    reads as "no groups", found by two set sizes instead of a union-find over the pool."""
    n = len(labels)
    if len(set(subnets)) == n and len(set(labels)) == n:
        return None  # (one None label among distinct ones joins nothing either)
    parent = list(range(n))
    first: dict[tuple[str, object], int] = {}
    for i, (label, subnet) in enumerate(zip(labels, subnets, strict=True)):
        join_roots(parent, i, first.setdefault(("subnet", subnet), i))
        if label is not None:
            join_roots(parent, i, first.setdefault(("copy", label), i))
    return [find_root(parent, i) for i in range(len(labels))]


def _left_out(colluders: Sequence[int] | None, weights: npt.NDArray[np.float64]) -> list[list[int]]:
    """The groups (indices, two or more) whose members are judged without one another: those
    that leave a reference of at least two other updates holding at least the group's weight
    (a loopback swarm is one /24 besides the judge itself: nothing to judge it against)."""
    if colluders is None:
        return []
    members: dict[int, list[int]] = {}
    for i, leader in enumerate(colluders):
        members.setdefault(leader, []).append(i)
    total = float(weights.sum())
    out = []
    for group in members.values():
        share = float(weights[group].sum())
        if len(group) > 1 and len(colluders) - len(group) >= 2 and total - share >= share:
            out.append(group)
    return out


def _hostile_lately(count: int, average: float, evidence: int) -> bool:
    """A peer's moving direction score says hostile: enough evidence, far below the centre."""
    return count >= evidence and average < -Z_MEAN


def _against_now(cosine: float, centre: float, spread: float, pool: int) -> bool:
    """Hostile in this round alone: a small pool has no robust centre, only a floor."""
    if pool < ROBUST_POOL:
        return cosine < MIN_COSINE
    return cosine < 0.0 and (cosine - centre) / spread < -Z_SINGLE


@dataclass(frozen=True, slots=True)
class _Directions:
    """A pool's direction statistics, each cosine by the id of its update's direction."""

    cosine: dict[int, float]
    centre: float
    spread: float


# Equal-weight pools by the ids of their directions (see direction_statistics).
_shared: IdentityMemo[_Directions] = IdentityMemo(2 * ENTRIES)


def direction_statistics(
    pool: list[UpdateSummary],
    weights: npt.NDArray[np.float64],
    colluders: Sequence[int] | None = None,
    sharp: bool = True,
) -> tuple[list[float], float, float]:
    """Each update's cosine to the weighted coordinate median of the pool (pool order; []
    if undefined), and the weighted median (``centre``) and scaled MAD (``spread``) of those
    cosines when the pool has at least ``ROBUST_POOL`` updates.

    Weighted (identical updates count once, then the subnet cap), so a group of identical
    updates - on one subnet or on many - cannot capture the reference that judges everyone
    else (issue 12: 40 identical flips among 100 got honest peers banned), nor shift the
    centre and spread by its numbers.

    Shared (shared_work.py): with equal weights both medians are selections, whose values do
    not depend on the pool's order, and each cosine is its own row's, so every replica of a
    flat round - each holding the same direction objects, its own last - gets the result of
    one computation instead of repeating an O(pool x columns) median. Pools under
    ``MEMO_MIN_POOL`` are computed each time: a gossip close's pool is no other node's."""
    if len(pool) < 3:
        return [], 0.0, 0.0
    equal = bool(weights[0] > 0 and np.all(weights == weights[0]))
    if not equal or len(pool) < MEMO_MIN_POOL:  # small: a gossip pool, no other node's
        return _direction_statistics(pool, weights, colluders, sharp)
    ids = [id(s.direction) for s in pool]
    # Ints alone when nobody has colluders (a flat round's usual pool): cheaper to sort than
    # pairs, and never equal to a key of pairs.
    key: tuple[object, ...] = (
        sharp,
        *(
            sorted(zip(ids, [ids[g] for g in colluders], strict=True))
            if colluders is not None
            else sorted(ids)
        ),
    )
    hit = _shared.get(key)
    if hit is None:
        cosines, centre, spread = _direction_statistics(pool, weights, colluders, sharp)
        by_id = dict(zip(ids, cosines, strict=False))
        _shared.put(key, list(pool), _Directions(by_id, centre, spread))
        return cosines, centre, spread
    if not hit.cosine:
        return [], 0.0, 0.0
    by_id = hit.cosine
    return [by_id[id(s.direction)] for s in pool], hit.centre, hit.spread


def _direction_statistics(
    pool: list[UpdateSummary],
    weights: npt.NDArray[np.float64],
    colluders: Sequence[int] | None = None,
    sharp: bool = True,
) -> tuple[list[float], float, float]:
    directions = np.array([s.direction for s in pool])  # np.stack's copy, less its checks
    reference = weighted_median(directions, weights).astype(np.float64)
    lengths = np.asarray([s.direction_norm for s in pool])
    cosines = _cosines(directions, lengths, reference)
    if cosines is None:
        return [], 0.0, 0.0
    robust = len(pool) >= ROBUST_POOL
    centre, spread = _centre_spread(cosines, weights, sharp) if robust else (0.0, 0.0)
    groups = _left_out(colluders, weights)
    if groups:
        judged = cosines.copy()
        for members in groups:
            rest = np.ones(len(pool), dtype=bool)
            rest[members] = False
            refs = weighted_medians_with_each(
                # One full unit for the member: as an update alone on its subnet holds.
                directions[rest],
                weights[rest],
                directions[members],
                np.ones(len(members)),
            )
            for i, ref in zip(members, refs.astype(np.float32).astype(np.float64), strict=True):
                # Member i against the pool without the rest of its group, placed on the
                # pool's scale by its standing among the others against the same reference.
                against = _cosines(directions, lengths, ref)
                if against is None:
                    continue
                if not robust:
                    judged[i] = against[i]
                    continue
                c, d = _centre_spread(against[rest], weights[rest], sharp)
                if not sharp:
                    # Where verdicts ban, never on a sharper scale than the pool's own: the
                    # MAD of the fewer cosines left is noisier (mimic 30% under the mean: 6
                    # left, MAD 0.028 vs the pool's 0.13 placed an honest victim at -8.7
                    # instead of -1.9, and six honest judges banned it).
                    d = max(d, spread)
                judged[i] = centre + spread * (against[i] - c) / d
        cosines = judged
    return cosines.tolist(), centre, spread


def _cosines(
    directions: npt.NDArray[np.float64],
    lengths: npt.NDArray[np.float64],
    reference: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64] | None:
    """Each row's cosine to ``reference`` (None when the reference has no direction)."""
    norm = math.sqrt(float(reference @ reference))
    if norm == 0.0 or not math.isfinite(norm):
        return None
    # Each row's own product and pairwise sum: the same bits wherever the row sits in the
    # pool (a matrix-vector product's rounding depends on the row's position and count).
    dots = (directions * reference).sum(axis=1)
    return np.asarray(dots / np.maximum(lengths * norm, 1e-30), dtype=np.float64)


def _centre_spread(
    cosines: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], sharp: bool = True
) -> tuple[float, float]:
    """The centre of ``cosines`` (the weighted median of their shortest half: the narrowest
    run of sorted cosines holding more than half the weight) and their scaled MAD about it
    (floored at MIN_SPREAD).

    Why not the median of all: it has a 50% breakdown point but leans towards a large
    minority. Measured (robustness matrix, 3 of 10 flipping labels): the attackers' low
    cosines pulled the median down and widened the MAD, a label-flipper scored about -1.5
    instead of about -3.5 against the honest cosines, its moving score sat at the -Z_MEAN
    cut, and 324 of 378 poisoned updates were accepted (+4.0% loss). Honest cosines are one
    cluster; the shortest majority window lies inside it whenever the attackers are a
    minority of the weight (subnet cap, copies counted once). The spread stays the MAD (about
    the robust centre): the window's own width is narrower than a heavy-tailed honest spread
    and rejected more honest updates (tests/protocol/test_protocol_direction.py).

    ``sharp=False`` (the weighted median of ALL cosines) where direction verdicts ban
    (``direction_bans``: the weighted mean): the sharper centre also rejects a persistently
    unusual honest peer more often (robustness matrix, 10% scale under the mean, pools of 9
    honest updates once the attacker is norm-rejected: 0 -> 34 honest rejections), and under
    the mean rejections add up to bans (1 -> 152 honest bans over the matrix). A robust rule
    bounds what the plain centre misses; the mean keeps the centre (and bans) it had."""
    if not sharp:
        centre = float(weighted_median(cosines[:, None], weights)[0])
        deviation = float(weighted_median(np.abs(cosines[:, None] - centre), weights)[0])
        return centre, max(1.4826 * deviation, MIN_SPREAD)
    order = np.argsort(cosines, kind="stable")
    s, w = cosines[order], weights[order]
    cum = np.concatenate(([0.0], np.cumsum(w)))
    n = len(s)
    # For each start i, the first end j whose window s[i..j] holds more than half the weight.
    ends = np.searchsorted(cum, cum[:n] + 0.5 * cum[n], side="right") - 1
    starts = np.flatnonzero(ends < n)
    i = int(starts[int(np.argmin(s[ends[starts]] - s[starts]))])
    j = int(ends[i])
    centre = float(weighted_median(s[i : j + 1, None], w[i : j + 1])[0])
    deviation = float(weighted_median(np.abs(cosines[:, None] - centre), weights)[0])
    return centre, max(1.4826 * deviation, MIN_SPREAD)
