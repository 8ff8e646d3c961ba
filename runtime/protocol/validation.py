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

import hashlib
import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    TensorDict,
    UpdateKind,
    rms_norm,
    sample_coordinates,
)

MAX_DATASET_SIZE = 10**12
DIRECTION_SAMPLE = 4096
DIRECTION_COLUMNS = 512  # coordinates the direction test actually compares
MIN_COSINE = -0.2  # honest gradients of one model point roughly the same way
REPLAY_MEMORY = 4  # fingerprints remembered per peer
TRACKED_PEERS = 4096  # peers whose fingerprints we keep (least recently heard dropped first)


def check_structure(
    c: Contribution, spec: ModelSpec, expected_kind: UpdateKind
) -> tuple[RejectReason | None, torch.Tensor | None]:
    """Verdict on one contribution in isolation (None = admissible), plus its flat vector
    when the model is compact (computed once here, reused at close)."""
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
    return None, check.flat


class CloseTimeJudge:
    """Keeps the statistics that close-time verdicts need, per update kind.

    Every update of a round is reduced once to a summary vector (all of it for small models,
    ``DIRECTION_SAMPLE`` seeded coordinates for large ones); norms, replay fingerprints and
    directions are then a handful of batched torch operations per round instead of a few
    dozen per contribution — which is what lets the simulator run thousands of nodes.
    """

    def __init__(self, config: ProtocolConfig) -> None:
        self._cfg = config
        self._norms: dict[UpdateKind, deque[float]] = {
            "grad": deque(maxlen=config.norm_history),
            "params": deque(maxlen=config.norm_history),
        }
        self._fingerprints: dict[str, deque[bytes]] = {}

    def judge(
        self,
        kind: UpdateKind,
        own: TensorDict | None,
        candidates: Sequence[tuple[str, TensorDict]],
        flats: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, RejectReason]:
        """Verdicts for peers' candidates; ``own`` informs the statistics but is trusted.

        ``flats`` (compact models): every pool member's flat vector, candidates then own.
        """
        pool = [t for _, t in candidates] + ([own] if own is not None else [])
        if not pool:
            return {}
        # numpy, not torch, from here: a round's pool is a few rows, and numpy's per-call
        # overhead is ~1 us against torch's ~5-10 us (this runs at every close of every node).
        if flats is not None:
            rows = torch.stack(list(flats)).numpy()
            norms = np.sqrt(np.square(rows, dtype=np.float64).mean(axis=1)).tolist()
        else:
            rows = torch.stack([self._summary(t) for t in pool]).numpy()
            norms = [rms_norm(t) for t in pool]
        peers = [p for p, _ in candidates]
        rejected: dict[str, RejectReason] = {}
        for i, peer in enumerate(peers):
            if self._is_replay(peer, rows[i]):
                rejected[peer] = RejectReason.REPLAY
        own_norm = norms[-1] if own is not None else None
        bound = self._norm_bound(kind, own_norm, norms[: len(peers)])
        for peer, n in zip(peers, norms, strict=False):
            if peer not in rejected and bound is not None and n > bound:
                rejected[peer] = RejectReason.NORM
        if kind == "grad":
            keep = [i for i, p in enumerate(peers) if p not in rejected]
            if own is not None:
                keep.append(len(pool) - 1)
            for i in self._hostile_rows(rows, keep):
                if i < len(peers):
                    rejected[peers[i]] = RejectReason.DIRECTION
        accepted = [n for p, n in zip(peers, norms, strict=False) if p not in rejected]
        if own_norm is not None:
            accepted.append(own_norm)
        self._norms[kind].extend(accepted)
        return rejected

    def _summary(self, tensors: TensorDict) -> torch.Tensor:
        sample = sample_coordinates(tensors, DIRECTION_SAMPLE, self._cfg.sketch_seed + 1)
        return sample.to(torch.float32)

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

    def _hostile_rows(self, rows: npt.NDArray[np.float32], keep: list[int]) -> list[int]:
        """Indices (into ``rows``) pointing against the coordinate-wise median of ``keep``."""
        if len(keep) < 3:
            return []
        # A strided subsample keeps the median cheap (it sorts) and spans every tensor.
        step = max(1, rows.shape[1] // DIRECTION_COLUMNS)
        pool = rows[keep, ::step].astype(np.float64)
        # The lower median (as torch.median), by selection rather than a full sort.
        k = (pool.shape[0] - 1) // 2
        reference = np.partition(pool, k, axis=0)[k]
        ref_norm = float(np.sqrt(reference @ reference))
        if ref_norm == 0.0 or not math.isfinite(ref_norm):
            return []
        lengths = np.sqrt(np.einsum("ij,ij->i", pool, pool))
        cosines = (pool @ reference) / np.maximum(lengths * ref_norm, 1e-30)
        return [i for i, c in zip(keep, cosines.tolist(), strict=True) if c < MIN_COSINE]

    def _is_replay(self, peer: str, row: npt.NDArray[np.float32]) -> bool:
        # A hash of the whole summary: sparse gradients (embedding rows nobody touched) make
        # a handful of coordinates identical across rounds, thousands never are.
        fp = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        seen = self._fingerprints.pop(peer, None) or deque(maxlen=REPLAY_MEMORY)
        self._fingerprints[peer] = seen  # re-inserted: the dict runs oldest-talker first
        if len(self._fingerprints) > TRACKED_PEERS:
            del self._fingerprints[next(iter(self._fingerprints))]
        if fp in seen:
            return True
        seen.append(fp)
        return False
