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


def geometric_median(rows: F32, weights: F64, iterations: int) -> F32:
    if rows.shape[0] == 1:
        return as_f32(rows[0].copy())
    x = rows.astype(np.float64)
    w = weights / weights.sum()
    z = weighted_median(rows, w).astype(np.float64)
    floor = SMOOTHING * (float(np.abs(x).max()) or 1.0)
    # np.linalg.norm(x - z, axis=1) spelled out (its own code for real rows: sqrt of the
    # row sums of squares, the same calls, the same bits) without its per-call checks: a
    # gossip close runs this on ~5 rows, where numpy's call overhead is the whole cost.
    add, sqrt, maximum = np.add.reduce, np.sqrt, np.maximum
    for _ in range(iterations):
        delta = x - z
        delta *= delta
        alpha = w / maximum(sqrt(add(delta, axis=1)), floor)
        z = alpha @ x / alpha.sum()
    return as_f32(z)
