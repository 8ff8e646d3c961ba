"""A robust aggregation's result, shared by the replicas that would repeat it on the same rows.

Why: in a flat round every node closes over the same contributions - the simulator hands one
``Contribution`` object per sender to every receiver, and the sender checks that same object
first (``Contribution.check``), so every replica sees the same row objects - and combines them
with the same rule, weights and seed. N replicas then repeat one robust aggregation (a
geometric median over N rows: N^2 work per round for one result). The aggregation is a pure
function of its inputs, so the first replica's result is every other's.

The key is the *identity* of the input rows (an entry holds its rows, so no id can be reused
while the entry lives) plus the rule, the weights and the seed by value: a hit is the same
computation on the same values, bit for bit. Rows that are not the check's own array (made per
call) are never looked up. A real node decodes every message from the wire into fresh arrays,
so it never hits: the memo changes no result anywhere, only how often one is computed.

Bounded: rounds close in order, so a few entries (the newest rounds) are all that can hit.
Every hit returns a copy, so replicas never share a buffer they might apply in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

ENTRIES = 4  # rounds whose result is kept; the flat round in progress is the newest

# key -> (the rows the key names by id, kept alive with it; the result)
_memo: dict[tuple[object, ...], tuple[Sequence[F32], F32]] = {}


def shared_aggregate(
    rule: object,  # a frozen dataclass: hashed by value
    rows: Sequence[F32],
    weights: Sequence[float],
    seed: int,
    compute: Callable[[], F32],
) -> F32:
    """``compute()``, or a copy of its result for the same rule, row objects, weights, seed."""
    key = (rule, seed, tuple(weights), tuple(map(id, rows)))
    hit = _memo.get(key)
    if hit is not None:
        return hit[1].copy()
    result = compute()
    if len(_memo) >= ENTRIES:
        del _memo[next(iter(_memo))]
    _memo[key] = (rows, result.copy())
    return result
