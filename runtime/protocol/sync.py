"""State sync: how a late, rejoining or drifted node adopts the swarm's state.

Why majority-by-proximity rather than exact digests: with partial aggregation honest replicas
are *close*, not bit-identical, so demanding equal digests would make sync fail exactly when
it is needed. Each response's sketch is recomputed from the tensors it carries (never trusted
from the sender), responses within ``drift_bound`` of each other agree, and the largest
agreeing group wins if it is a strict majority of responders. The node adopts the average of
that group's states (bit-identical responders make this the exact shared state; a lying
minority is outside the group and has no say) and the median of their rounds (a liar cannot
push us to round 10^9). The outer-optimizer state (DiLoCo momentum) rides along and is
averaged over the same group, so a joiner steps exactly like the replicas it copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm_tune.runtime.aggregation.weighted import weighted_average
from swarm_tune.runtime.protocol.messages import StateResponse
from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    TensorDict,
    all_finite,
    param_digest,
    param_sketch,
    sketch_distance,
)


@dataclass(frozen=True, slots=True)
class SyncDecision:
    round: int
    tensors: TensorDict
    digest: str
    agreeing: int
    responders: int
    outer: TensorDict  # averaged outer state of the group (empty unless all of it sent one)


def decide(
    responses: dict[str, StateResponse],
    spec: ModelSpec,
    drift_bound: float,
    sketch_size: int,
    sketch_seed: int,
) -> SyncDecision | None:
    """The state a strict majority of valid responders agree on, or None."""
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
    sketches = {p: param_sketch(r.tensors, sketch_size, sketch_seed) for p, r in valid.items()}
    best: list[str] = []
    for p in valid:
        group = [
            q
            for q in valid
            if max(
                sketch_distance(sketches[q], sketches[p]), sketch_distance(sketches[p], sketches[q])
            )
            <= drift_bound
        ]
        if len(group) > len(best):
            best = group
    if 2 * len(best) <= len(responses):
        return None
    rounds = sorted(valid[p].round for p in best)
    tensors = weighted_average([valid[p].tensors for p in best], [1.0] * len(best))
    outers = [valid[p].outer for p in best]
    outer = weighted_average(outers, [1.0] * len(best)) if all(outers) else {}
    return SyncDecision(
        round=rounds[(len(rounds) - 1) // 2],
        tensors=tensors,
        digest=param_digest(tensors),
        agreeing=len(best),
        responders=len(responses),
        outer=outer,
    )
