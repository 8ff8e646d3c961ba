"""Centered clipping with bucketing, and the geometric median (smoothed Weiszfeld / RFA).

Both move a centre ``v`` towards the inputs while bounding how far any one input can pull:

* Centered clipping (Karimireddy, He & Jaggi 2021): ``v <- v + sum_i w_i clip(x_i - v, tau)``
  for ``iterations`` steps. Each input moves the centre by at most ``w_i * tau``, so a
  minority of weight ``delta`` moves it by at most ``delta * tau`` per step however far away it
  is. We start from the weighted coordinate median (stateless: every replica that accepted the
  same set computes the same bits, no history to drift) and set ``tau`` relative to the data:
  ``clip_tau x`` the weighted median distance of the inputs to the start, so one setting works
  for gradient and parameter rounds and for every stage of training.
* Bucketing (Karimireddy, He & Jaggi 2022): before clipping, inputs are shuffled (seeded by the
  round and the contributor set, so replicas agree) and averaged in buckets of ``bucket``;
  averaging shrinks the honest spread on non-IID data, which is what lets a robust rule tell
  heterogeneity from attack. Guarantee: with Byzantine weight ``delta`` below ~0.1-0.2 (it is
  multiplied by up to ``bucket`` in the bucketed inputs) the error is O(sqrt(delta) * honest
  spread). Cost: O(iterations * n * d).
* Geometric median (Pillutla, Kakade & Harchaoui 2022, RFA): the point minimising the weighted
  sum of distances, by ``iterations`` smoothed Weiszfeld steps from the coordinate median.
  Breakdown point 1/2 of the weight; cost O(iterations * n * d).
"""

from __future__ import annotations

import hashlib
import math
import operator

import numpy as np
import numpy.typing as npt

from swarm_tune.runtime.aggregation.coordinate import as_f32, weighted_median

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SMOOTHING = 1e-8  # relative floor on Weiszfeld distances (RFA's nu): no division by zero


def bucket_seed(round_number: int, peers: list[str]) -> int:
    """A seed every replica derives alike from the round and who contributed."""
    digest = hashlib.sha256(f"{round_number}|{','.join(peers)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def buckets(rows: F32, weights: F64, size: int, seed: int) -> tuple[F64, F64]:
    """Seeded shuffle, then weighted means of consecutive groups of ``size`` inputs."""
    x = rows.astype(np.float64)
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(rows.shape[0])
    means, masses = [], []
    for start in range(0, len(perm), size):
        idx = np.sort(perm[start : start + size])
        w = weights[idx]
        means.append(w @ x[idx] / w.sum())
        masses.append(w.sum())
    return np.stack(means), np.array(masses)


def centered_clipping(
    rows: F32, weights: F64, tau: float, iterations: int, bucket: int, seed: int
) -> F32:
    if rows.shape[0] == 1:
        return as_f32(rows[0].copy())
    if bucket > 1 and rows.shape[0] > bucket:
        x, w = buckets(rows, weights, bucket, seed)
    else:
        x, w = rows.astype(np.float64), weights
    w = w / w.sum()
    v = weighted_median(x.astype(np.float32), w).astype(np.float64)
    distances = np.linalg.norm(x - v, axis=1)
    radius = tau * float(weighted_median(distances[:, None].astype(np.float32), w)[0])
    if not radius > 0:
        return as_f32(v)
    for _ in range(iterations):
        delta = x - v
        norms = np.linalg.norm(delta, axis=1)
        scale = np.minimum(1.0, radius / np.maximum(norms, 1e-30))
        v = v + (w * scale) @ delta
    return as_f32(v)


# Pools of at most this many rows iterate on their Gram matrix (k x k): its one product costs
# k^2 d, the row-space steps 2 x iterations x k d, so from a few dozen rows (a flat pool of
# hundreds) the row-space steps are cheaper and keep their place.
GRAM_MAX_ROWS = 32


def geometric_median(rows: F32, weights: F64, iterations: int) -> F32:
    """Smoothed Weiszfeld steps ``z <- sum_i a_i x_i / sum_i a_i``, ``a_i = w_i / max(|x_i -
    z|, floor)``, from the weighted coordinate median ``z0``.

    Why in Gram form for a few rows: every step after the first makes ``z`` an affine
    combination of the rows, so with ``y_i = x_i - z0`` and ``G = Y Y^T`` (one product) a
    step's distances are ``|y_i - c^T Y|^2 = G_ii - 2 (G c)_i + c^T G c``: the steps run on k
    numbers, not on k x d arrays, and the rows are read twice in all (the product, the final
    ``z0 + c^T Y``) instead of twice a step. A gossip close runs this on ~3-6 rows of ~1,200
    columns, where each of the ~9 numpy calls of a row-space step paid numpy's per-call floor
    (~60 of a ~170 us close); a real node's few whole-update rows make one pass over them
    instead of one per step, and one float64 copy of the rows instead of two.

    Rounding: centring on ``z0`` first keeps the cancellation in the expansion relative to
    the pool's spread, not to the rows' size (a parameter row far from 0); its error on a
    squared distance is ~1e-16 of the largest squared deviation, so a distance under ~1e-8 of
    the spread (a copy the centre sits on) reads as that noise, clamped at 0 and floored as
    before. The result differs from the row-space steps' at the rounding level (equal after
    float32 rounding on 1,047 scale-10k pools, 0 of 1.27 M coordinates differing)."""
    if rows.shape[0] == 1:
        return as_f32(rows[0].copy())
    w = weights / weights.sum()
    z = weighted_median(rows, w).astype(np.float64)
    # max |x| from the float32 rows (exact in float64) without an |x| copy of the rows.
    floor = SMOOTHING * (max(float(rows.max()), -float(rows.min())) or 1.0)
    if rows.shape[0] > GRAM_MAX_ROWS or not math.isfinite(floor):
        # Non-finite rows (the close's validation rejects them before this) keep the row
        # steps' NaN result; Python's max() would drop a NaN floor and divide by zero.
        return _weiszfeld_rows(rows.astype(np.float64), w, z, floor, iterations)
    y = rows.astype(np.float64)
    y -= z
    c = _weiszfeld_gram((y @ y.T).tolist(), w.tolist(), floor, iterations)
    z += np.array(c) @ y
    return as_f32(z)


def _weiszfeld_gram(
    gram: list[list[float]], w: list[float], floor: float, steps: int
) -> list[float]:
    """The steps' coefficients ``c`` (``z = z0 + c^T Y``) from the centred rows' Gram matrix,
    in Python floats: on k <= GRAM_MAX_ROWS numbers a numpy call's floor (~1 us) is more
    than the arithmetic (measured at k = 4: ~35% less than the same steps as k-vectors)."""
    mul, sqrt = operator.mul, math.sqrt
    squares = [row[i] for i, row in enumerate(gram)]
    d2 = squares  # the first step's squared distances: to z0 itself (c = 0)
    for step in range(steps):
        # max(., 0): the expansion can cancel below 0 for a row the centre sits on.
        alpha = [
            wi / max(sqrt(di) if di > 0.0 else 0.0, floor) for wi, di in zip(w, d2, strict=True)
        ]
        total = sum(alpha)
        c = [a / total for a in alpha]
        if step + 1 < steps:
            gc = [sum(map(mul, row, c)) for row in gram]
            cgc = sum(map(mul, c, gc))
            d2 = [sq - 2.0 * g + cgc for sq, g in zip(squares, gc, strict=True)]
    return c


def _weiszfeld_rows(x: F64, w: F64, z: F64, floor: float, iterations: int) -> F32:
    """The steps on the rows themselves (pools over GRAM_MAX_ROWS)."""
    # np.linalg.norm(x - z, axis=1) spelled out (its own code for real rows: sqrt of the
    # row sums of squares, the same calls, the same bits) without its per-call checks.
    add, sqrt, maximum = np.add.reduce, np.sqrt, np.maximum
    for _ in range(iterations):
        delta = x - z
        delta *= delta
        alpha = w / maximum(sqrt(add(delta, axis=1)), floor)
        z = alpha @ x / alpha.sum()
    return as_f32(z)
