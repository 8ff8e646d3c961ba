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
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import torch

from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    Sketch,
    TensorDict,
    UpdateKind,
    all_finite,
    param_sketch,
    rms_norm,
    sample_coordinates,
)

MAX_DATASET_SIZE = 10**12
DIRECTION_SAMPLE = 4096
MIN_COSINE = -0.2  # honest gradients of one model point roughly the same way
REPLAY_MEMORY = 4  # fingerprints remembered per peer


def check_structure(
    c: Contribution, spec: ModelSpec, expected_kind: UpdateKind
) -> RejectReason | None:
    """Verdict on one contribution in isolation (None = admissible)."""
    if c.kind != expected_kind:
        return RejectReason.WRONG_KIND
    if not 0 < c.dataset_size <= MAX_DATASET_SIZE:
        return RejectReason.BAD_SIZE
    mismatch = spec.mismatch(c.tensors)
    if mismatch == "shape":
        return RejectReason.SHAPE
    if mismatch == "dtype":
        return RejectReason.DTYPE
    if not all_finite(c.tensors):
        return RejectReason.NON_FINITE
    return None


class CloseTimeJudge:
    """Keeps the statistics that close-time verdicts need, per update kind."""

    def __init__(self, config: ProtocolConfig) -> None:
        self._cfg = config
        self._norms: dict[UpdateKind, deque[float]] = {
            "grad": deque(maxlen=config.norm_history),
            "params": deque(maxlen=config.norm_history),
        }
        self._fingerprints: dict[str, deque[Sketch]] = {}

    def judge(
        self,
        kind: UpdateKind,
        own: TensorDict | None,
        candidates: Sequence[tuple[str, TensorDict]],
    ) -> dict[str, RejectReason]:
        """Verdicts for peers' candidates; ``own`` informs the statistics but is trusted."""
        rejected: dict[str, RejectReason] = {}
        norms = {peer: rms_norm(t) for peer, t in candidates}
        own_norm = rms_norm(own) if own is not None else None
        for peer, tensors in candidates:
            if self._is_replay(peer, tensors):
                rejected[peer] = RejectReason.REPLAY
        bound = self._norm_bound(kind, own_norm, list(norms.values()))
        for peer, n in norms.items():
            if peer not in rejected and bound is not None and n > bound:
                rejected[peer] = RejectReason.NORM
        if kind == "grad":
            survivors = [(p, t) for p, t in candidates if p not in rejected]
            for peer in self._hostile_directions(own, survivors):
                rejected[peer] = RejectReason.DIRECTION
        accepted_norms = [n for p, n in norms.items() if p not in rejected]
        if own_norm is not None:
            accepted_norms.append(own_norm)
        self._norms[kind].extend(accepted_norms)
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

    def _hostile_directions(
        self, own: TensorDict | None, candidates: Sequence[tuple[str, TensorDict]]
    ) -> list[str]:
        pool = list(candidates) + ([("", own)] if own is not None else [])
        if len(pool) < 3:
            return []
        samples = {
            peer: sample_coordinates(t, DIRECTION_SAMPLE, self._cfg.sketch_seed + 1)
            for peer, t in pool
        }
        reference = torch.stack(list(samples.values())).median(dim=0).values
        ref_norm = float(reference.norm())
        if ref_norm == 0.0 or not math.isfinite(ref_norm):
            return []
        hostile = []
        for peer, _ in candidates:
            v = samples[peer]
            denom = float(v.norm()) * ref_norm
            if denom > 0 and float(v @ reference) / denom < MIN_COSINE:
                hostile.append(peer)
        return hostile

    def _is_replay(self, peer: str, tensors: TensorDict) -> bool:
        fp = param_sketch(tensors, 16, self._cfg.sketch_seed + 2)
        seen = self._fingerprints.setdefault(peer, deque(maxlen=REPLAY_MEMORY))
        if fp in seen:
            return True
        seen.append(fp)
        return False
