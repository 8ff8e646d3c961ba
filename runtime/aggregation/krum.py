"""Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018), weighted by influence.

Krum scores each input by the summed squared distance to its ``n - f - 2`` nearest other
inputs: an honest update sits among many honest neighbours, an outlier does not. Multi-Krum
averages the ``m`` best-scored inputs (weighted by their influence weights).

Why weighted neighbours: classic Krum counts inputs, so ``k`` identical Sybil updates are each
other's nearest neighbours at distance 0 and score best - 40 identical updates from one /24
would be *selected*. Here each neighbour counts with its influence weight (normalised so the
weights sum to ``n``; the subnet cap bounds a subnet's total), and a score sums neighbours until
``n - f - 2`` units of weight are covered: a capped Sybil group cannot fill that budget with
itself, so its score includes distances to the honest inputs. With unit weights (no cap active)
this is exactly classic Krum.

Guarantee: for ``n > 2f + 2`` and at most ``f`` Byzantine inputs (of ordinary weight) the
selected inputs are each close to the honest ones (Krum's (alpha, f)-resilience). ``f`` is
clamped to ``(n - 3) // 2`` for rounds with fewer contributions than planned. Cost: the pairwise
distances, O(n^2 * d) time (one Gram matrix) and O(n^2) extra memory.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from swarm_tune.runtime.aggregation.coordinate import as_f32

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def effective_f(n: int, f: int | float) -> int:
    """``f`` as a count for ``n`` inputs (a float is a fraction), clamped so ``n > 2f + 2``."""
    count = int(f * n) if isinstance(f, float) else f
    return max(0, min(count, (n - 3) // 2))


def krum_scores(rows: F32, weights: F64, f: int) -> F64:
    """Each input's weighted Krum score (lower is more central)."""
    n = rows.shape[0]
    x = rows.astype(np.float64)
    squares = np.einsum("ij,ij->i", x, x)
    dist = np.maximum(squares[:, None] + squares[None, :] - 2.0 * (x @ x.T), 0.0)
    w = weights * (n / weights.sum())
    budget = float(n - f - 2)
    # Row i: the other inputs by distance (self last: +inf, and it never counts).
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")
    near = np.take_along_axis(dist, order, axis=1)[:, :-1]
    mass = w[order][:, :-1]
    take = np.clip(budget - (np.cumsum(mass, axis=1) - mass), 0.0, mass)
    return np.asarray((take * near).sum(axis=1), dtype=np.float64)


def multi_krum(rows: F32, weights: F64, f: int | float, m: int) -> F32:
    """The weighted mean of the ``m`` best-scored inputs (``m = 0``: ``n - f``)."""
    n = rows.shape[0]
    if n < 3:
        return as_f32(weights @ rows.astype(np.float64) / weights.sum())
    fe = effective_f(n, f)
    keep = n - fe if m <= 0 else min(m, n)
    chosen = np.argsort(krum_scores(rows, weights, fe), kind="stable")[:keep]
    chosen.sort()  # summation in input (peer id) order: deterministic bits
    w = weights[chosen]
    return as_f32(w @ rows[chosen].astype(np.float64) / w.sum())
