"""Results shared by the replicas that would repeat one computation on the same objects.

Why: in a flat round every node closes over the same contributions - the simulator hands one
``Contribution`` object per sender to every receiver, and the sender checks that same object
first (``Contribution.check``), so every replica sees the same row and summary objects - and
judges and combines them with the same rules. N replicas then repeat one robust aggregation (a
geometric median over N rows: N^2 work per round for one result) and one direction reference
(a coordinate median over N directions). Both are pure functions of their inputs, so the first
replica's result is every other's.

A key names its input *objects* by identity (an entry keeps them alive, so no id can be reused
while the entry lives) plus every other input by value: a hit is the same computation on the
same values, bit for bit. A real node decodes every message from the wire into fresh arrays,
so it never hits: the memo changes no result anywhere, only how often one is computed.

Bounded: rounds close in order, so a few entries (the newest rounds) are all that can hit.
Pools under ``MEMO_MIN_POOL`` (8) skip the memo: a gossip close's 3-5 rows are its own (0 hits
in ~10,000 lookups at scale-10k's 1,000 x 4), so its key and entry were pure cost; a flat
round of fewer than 8 members computes each time too (a cost only, never a result).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from swarm_tune.runtime.aggregation.near_duplicates import MEMO_MIN_POOL

F32 = npt.NDArray[np.float32]
V = TypeVar("V")

ENTRIES = 4  # rounds whose result is kept; the flat round in progress is the newest


class IdentityMemo(Generic[V]):
    """At most ``entries`` results by key, each keeping the objects its key names alive."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self._entries = entries
        self._memo: dict[tuple[object, ...], tuple[object, V]] = {}

    def get(self, key: tuple[object, ...]) -> V | None:
        hit = self._memo.get(key)
        return None if hit is None else hit[1]

    def put(self, key: tuple[object, ...], keep: object, value: V) -> None:
        """Store ``value`` under ``key``; ``keep`` holds the objects the key names by id."""
        if len(self._memo) >= self._entries:
            del self._memo[next(iter(self._memo))]
        self._memo[key] = (keep, value)


_aggregates: IdentityMemo[F32] = IdentityMemo()


def shared_aggregate(
    rule: object,  # a frozen dataclass: hashed by value
    rows: Sequence[F32],
    weights: Sequence[float],
    seed: int,
    compute: Callable[[], F32],
) -> F32:
    """``compute()``, or a copy of its result for the same rule, row objects, weights, seed.

    Every hit returns a copy, so replicas never share a buffer they might apply in place."""
    if len(rows) < MEMO_MIN_POOL:
        return compute()  # a gossip close's pool: no other node's (near_duplicates.py)
    key = (rule, seed, tuple(weights), tuple(map(id, rows)))
    hit = _aggregates.get(key)
    if hit is not None:
        return hit.copy()
    result = compute()
    _aggregates.put(key, rows, result.copy())
    return result
