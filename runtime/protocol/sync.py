"""State sync: how a late, rejoining or drifted node adopts the swarm's state.

Why majority-by-proximity rather than exact digests: with partial aggregation honest replicas
are *close*, not bit-identical, so demanding equal digests would make sync fail exactly when
it is needed. Responses within ``drift_bound`` of each other agree - measured on the FULL
tensors they carry (relative L2), never on a sketch: the sketch's coordinates are public and
seeded, so a poisoned responder keeps them honest and lies everywhere else (issue 12's
``poisoned_sync``: with sketch-only agreement one liar of three responders moved a joiner's
state by a third of its own lie). The largest agreeing group wins if it is a strict majority
of responders. The node adopts the coordinate-wise median of that group's states (the mean
for one or two; bit-identical responders make either the exact shared state, and a liar
inside the drift bound cannot drag a coordinate past an honest value) and the median of
their rounds (a liar cannot push us to round 10^9). The outer-optimizer state (DiLoCo
momentum) rides along and is combined over the same group the same way, so a joiner steps
exactly like the replicas it copied; so do the optimizer's moments (Adam m and v, the median
step count), each response's checked on its own first (moments.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from swarm_tune.runtime.aggregation.weighted import weighted_average
from swarm_tune.runtime.protocol.messages import StateResponse
from swarm_tune.runtime.protocol.moments import Moments, usable_moments
from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    TensorDict,
    all_finite,
    param_digest,
)

BLOCK = 1 << 20  # values per block of the float64 work (8 MB a state)


@dataclass(frozen=True, slots=True)
class SyncDecision:
    round: int
    tensors: TensorDict
    digest: str
    agreeing: int
    responders: int
    outer: TensorDict  # averaged outer state of the group (empty unless all of it sent one)
    moments: Moments | None = None  # the group's combined optimizer moments (None: keep own)


def decide(
    responses: dict[str, StateResponse],
    spec: ModelSpec,
    drift_bound: float,
    moment_bound: float = 0.0,
    norm_factor: float = 4.0,
) -> SyncDecision | None:
    """The state a strict majority of valid responders agree on, or None; with
    ``moment_bound`` > 0 also their optimizer moments (moments.py)."""
    valid = {
        peer: r
        for peer, r in sorted(responses.items())
        if r.round >= 0
        and spec.mismatch(r.tensors) is None
        and all_finite(r.tensors)
        and (not r.outer or (spec.mismatch(r.outer) is None and all_finite(r.outer)))
    }
    if not responses:
        return None
    peers = list(valid)
    same = _identical([valid[p].tensors for p in peers])
    best = peers if same else _largest_group({p: valid[p].tensors for p in peers}, drift_bound)
    if 2 * len(best) <= len(responses):
        return None
    rounds = sorted(valid[p].round for p in best)
    # Bit-identical answers are their own centre: no second pass over every state.
    states = [valid[p].tensors for p in best]
    tensors = dict(states[0]) if same else robust_centre(states)
    outers = [valid[p].outer for p in best]
    outer = robust_centre(outers) if all(outers) else {}
    usable = usable_moments(spec, [valid[p].moments for p in best], moment_bound, norm_factor)
    steps = sorted(m.step for m in usable)
    moments = (
        Moments(
            robust_centre([m.exp_avg for m in usable]),
            robust_centre([m.exp_avg_sq for m in usable]),
            steps[(len(steps) - 1) // 2],
        )
        if usable
        else None
    )
    return SyncDecision(
        round=rounds[(len(rounds) - 1) // 2],
        tensors=tensors,
        digest=param_digest(tensors),
        agreeing=len(best),
        responders=len(responses),
        outer=outer,
        moments=moments,
    )


def _largest_group(states: dict[str, TensorDict], drift_bound: float) -> list[str]:
    """The largest group agreeing with one of its members (first in name order on a tie)."""
    peers = list(states)
    k = len(peers)
    norm2 = [0.0] * k
    dist2 = [[0.0] * k for _ in range(k)]
    for block in _blocks([states[p] for p in peers]):
        for i in range(k):
            norm2[i] += float(torch.dot(block[i], block[i]))
            for j in range(i + 1, k):
                d = block[i] - block[j]
                dist2[i][j] += float(torch.dot(d, d))
    best: list[str] = []
    for i in range(k):
        group = [
            peers[j]
            for j in range(k)
            if _agree(dist2[min(i, j)][max(i, j)], norm2[i], norm2[j], drift_bound)
        ]
        if len(group) > len(best):
            best = group
    return best


def _blocks(states: list[TensorDict]) -> Iterator[list[torch.Tensor]]:
    """The states' values in name order, ``BLOCK`` at a time in float64 (one block each).

    Why blocks: float64 copies of whole states (and their differences, and a stack to sort)
    took ~7x the answers' own size: +2.1 GB for three answers of a 124 MB model, enough for
    a few joiners of a larger one to exhaust a machine's memory."""
    for name in sorted(states[0]):
        flats = [s[name].detach().reshape(-1) for s in states]
        for lo in range(0, flats[0].numel(), BLOCK):
            yield [f[lo : lo + BLOCK].to(torch.float64) for f in flats]


def _identical(states: list[TensorDict]) -> bool:
    """Bit-identical states (the usual answer: replicas that applied the same averages, or a
    swarm's first sync where every node holds the same initial weights) all agree and their
    centre is that state. Comparing bytes skips the float64 copies, distances and the sort
    of the general path: ~3 GB of temporaries per joiner for a 124 MB model asking three
    peers, which eight nodes starting at once on one box could not afford."""
    first = states[0] if states else {}
    return all(
        s.keys() == first.keys() and all(torch.equal(s[n], first[n]) for n in first)
        for s in states[1:]
    )


def _agree(dist2: float, norm2_a: float, norm2_b: float, bound: float) -> bool:
    """Relative L2 distance within ``bound``, relative to the smaller of the two norms."""
    scale = math.sqrt(min(norm2_a, norm2_b))
    diff = math.sqrt(dist2)
    return diff == 0.0 or (scale > 0 and diff / scale <= bound)


def robust_centre(states: list[TensorDict]) -> TensorDict:
    """The coordinate-wise median of three or more states (mean of the two middle values for
    an even count), the mean of one or two: equal states give back exactly that state (and
    cost no arithmetic)."""
    if _identical(states):
        return dict(states[0])
    if len(states) < 3:
        return weighted_average(states, [1.0] * len(states))
    out: TensorDict = {}
    k = len(states)
    for name in states[0]:
        first = states[0][name]
        flats = [s[name].detach().reshape(-1) for s in states]
        centre = torch.empty(first.numel(), dtype=first.dtype)
        for lo in range(0, centre.numel(), BLOCK):  # (blocks: see _blocks)
            stacked = torch.stack([f[lo : lo + BLOCK] for f in flats]).to(torch.float64)
            ordered = stacked.sort(dim=0).values
            mid = ordered[k // 2] if k % 2 else 0.5 * (ordered[k // 2 - 1] + ordered[k // 2])
            centre[lo : lo + BLOCK] = mid
        out[name] = centre.view(first.shape)
    return out
