"""Is a contribution fit to be averaged? Structural checks on arrival, statistical at close.

Why two stages: shape, dtype, finiteness and a sane dataset size can be judged from one
message alone, so bad ones are refused the moment they arrive (and cost their sender
reputation). Whether a norm is an *outlier* or a direction is *hostile* is relative: it is
judged at round close against the round's own contributions (ours included, which we trust)
and a running median of norms accepted earlier. Judging at close means an attacker gains
nothing by being first.

The statistical rules:
* RMS norm above ``norm_factor`` x median(reference norms) is an outlier (scaled / noise).
* Cosine to the coordinate-wise median update below ``min_cosine`` is hostile (sign-flip).
  Computed on a seeded coordinate sample so it stays cheap for 124M-parameter models.
* The same update sent again for another round (bit-identical sample) is a replay.

Each update is reduced once to an ``UpdateSummary`` (summary.py) when it is first checked;
the judge only ever looks at summaries, so a close costs a few small vector operations.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.summary import TensorCheck, UpdateSummary
from swarm_tune.runtime.protocol.tensors import ModelSpec, UpdateKind

MAX_DATASET_SIZE = 10**12
MIN_COSINE = -0.2  # honest gradients of one model point roughly the same way
REPLAY_MEMORY = 4  # fingerprints remembered per peer
TRACKED_PEERS = 4096  # peers whose fingerprints we keep (least recently heard dropped first)


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

    def judge(
        self,
        kind: UpdateKind,
        own: UpdateSummary | None,
        candidates: Sequence[tuple[str, UpdateSummary]],
    ) -> dict[str, RejectReason]:
        """Verdicts for peers' candidates; ``own`` informs the statistics but is trusted."""
        rejected: dict[str, RejectReason] = {}
        for peer, summary in candidates:
            if self._is_replay(peer, summary.fingerprint):
                rejected[peer] = RejectReason.REPLAY
        own_norm = own.rms if own is not None else None
        bound = self._norm_bound(kind, own_norm, [s.rms for _, s in candidates])
        if bound is not None:
            for peer, summary in candidates:
                if peer not in rejected and summary.rms > bound:
                    rejected[peer] = RejectReason.NORM
        if kind == "grad":
            kept = [(p, s) for p, s in candidates if p not in rejected]
            pool = [s for _, s in kept] + ([own] if own is not None else [])
            for i in self._hostile_rows(pool):
                if i < len(kept):
                    rejected[kept[i][0]] = RejectReason.DIRECTION
        accepted = [s.rms for p, s in candidates if p not in rejected]
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

    @staticmethod
    def _hostile_rows(pool: list[UpdateSummary]) -> list[int]:
        """Indices of the updates whose direction points against the coordinate-wise median."""
        if len(pool) < 3:
            return []
        directions = np.stack([s.direction for s in pool])
        # The lower median (as torch.median), by selection rather than a full sort.
        k = (len(pool) - 1) // 2
        reference = np.partition(directions, k, axis=0)[k]
        ref_norm = math.sqrt(float(reference @ reference))
        if ref_norm == 0.0 or not math.isfinite(ref_norm):
            return []
        dots = (directions @ reference).tolist()
        # cosine < MIN_COSINE, with the (positive) denominator multiplied out
        return [
            i
            for i, (s, dot) in enumerate(zip(pool, dots, strict=True))
            if dot < MIN_COSINE * max(s.direction_norm * ref_norm, 1e-30)
        ]

    def _is_replay(self, peer: str, fingerprint: int) -> bool:
        seen = self._fingerprints.pop(peer, ())
        replay = fingerprint in seen
        # Re-inserted: the dict runs oldest-talker first.
        self._fingerprints[peer] = seen if replay else (*seen, fingerprint)[-REPLAY_MEMORY:]
        if len(self._fingerprints) > TRACKED_PEERS:
            del self._fingerprints[next(iter(self._fingerprints))]
        return replay
