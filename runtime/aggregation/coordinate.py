"""Coordinate-wise robust statistics: weighted median and weighted trimmed mean.

Why one module for both: they are the same computation. Sort each coordinate's values, give
every value its (normalised) influence weight, and keep the weight that lies in the central
band ``[beta, 1 - beta]`` of the cumulative weight: ``beta = 0`` keeps everything (the weighted
mean), ``beta -> 0.5`` keeps the weighted median. With unit weights and ``beta * n`` whole,
this is the textbook trimmed mean (drop ``beta * n`` values at each end).

Why weighted: the protocol bounds a subnet's share of the *weight* (subnet cap), so a group of
identical updates from one /24 holds at most ``subnet_cap`` of the mass and cannot move a
weighted quantile beyond the honest range - an unweighted median counts each Sybil once.

Determinism: ``np.argsort(kind="stable")`` keeps ties in input order, and inputs arrive sorted
by peer id (``rules.aggregate``), so equal inputs give equal bits whatever the arrival order.
Cost: one sort per coordinate, O(n log n * d) time and O(n * d) memory (n inputs of d entries).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Floats = npt.NDArray[np.floating[Any]]  # float32 updates, float64 statistics


def as_f32(values: object) -> F32:
    """float32 (numpy's stubs type most reductions as Any; this pins the result type)."""
    return np.asarray(values, dtype=np.float32)


def _sorted_with_weights(rows: Floats, weights: F64) -> tuple[Floats, F64]:
    """Each column sorted, and the cumulative normalised weight at each sorted position."""
    order = np.argsort(rows, axis=0, kind="stable")
    values = np.take_along_axis(rows, order, axis=0)
    w = weights / weights.sum()
    cumulative = np.cumsum(w[order], axis=0)
    return values, cumulative


_EQUAL_FAST_MAX = 1_000_000  # inputs up to which the equal-weight rank is exact (see below)


def weighted_median(rows: Floats, weights: F64) -> F32:
    """Per coordinate, the lower weighted median: the smallest value whose cumulative
    weight reaches one half.

    Guarantee: if the inputs holding more than half of the weight are honest, every
    coordinate lies within the honest inputs' range of that coordinate (breakdown 1/2 of
    the weight). Cost: O(n log n * d)."""
    n = rows.shape[0]
    if n == 1:
        return as_f32(rows[0].copy())
    if n <= _EQUAL_FAST_MAX and weights[0] > 0 and bool(np.all(weights == weights[0])):
        # Equal weights: the cumulative weight first reaches one half at rank ceil(n/2)
        # (the 1e-12 slack exceeds cumsum's rounding for any n here), so a selection, not a
        # sort, finds the same value bit for bit - O(n d) instead of O(n log n d). The flat
        # sim's per-close direction test spent ~20% of its time in this sort.
        kth = (n + 1) // 2 - 1
        if n <= _NETWORK_MAX:
            picked = _kth_smallest(rows, kth)
            if picked is not None:
                return as_f32(picked)
        return as_f32(np.partition(rows, kth, axis=0)[kth])
    # One stable sort per coordinate, done on the transposed rows (each coordinate's values
    # in one contiguous row: ~30% cheaper on a gossip pool of ~5 x 1,500), and only the
    # chosen value gathered. The same sort order and the same sequential cumulative sums as
    # _sorted_with_weights, so the same bits.
    order = np.argsort(rows.T, axis=1, kind="stable")
    cumulative = np.cumsum((weights / weights.sum())[order], axis=1)
    index = np.argmax(cumulative >= 0.5 - 1e-12, axis=1)
    columns = np.arange(rows.shape[1])
    return as_f32(rows[order[columns, index], columns])


_NETWORK_MAX = 6  # rows up to which a min/max network beats np.partition (see below)
# Columns up to which it is used: each step makes two row-wide arrays (peak ~1.7-1.8x the
# rows, measured at 2M columns, where np.partition copies once), so a real node's whole-update
# rows (tens of MB, N <= 6) keep the select; a gossip pool's ~1,200 columns take the network.
_NETWORK_MAX_COLUMNS = 1 << 16
# Each float size's integer twin and that type's minimum: -0.0's bits.
_AS_INT: dict[int, tuple[np.dtype[np.signedinteger[Any]], int]] = {
    size: (np.dtype(t), int(np.iinfo(t).min)) for size, t in ((4, np.int32), (8, np.int64))
}


def _kth_smallest(rows: Floats, kth: int) -> Floats | None:
    """Per column, the value of rank ``kth`` (0 = smallest) of a few rows by compare-exchange
    steps on whole rows; None where its bits might differ from ``np.partition``'s.

    Why: a gossip close takes this median of ~3-5 rows of ~1,200 columns twice (the
    geometric median's start, the direction test's reference), and ``np.partition`` along
    axis 0 runs a select per column: ~60 us, where ``kth + 1`` bubble passes of
    ``np.minimum`` / ``np.maximum`` over the rows cost ~1 us a step (3 rows: 5 steps).

    Why the same bits: without NaN, a column's value of rank ``kth`` is one number, and a
    compare-exchange only moves values, so both return an element equal to it; equal floats
    have equal bits except +0.0 and -0.0, whose choice is the select's own (numpy 2 picks an
    implementation by CPU). So None when a row holds -0.0 (the caller selects as before), and
    when the result holds NaN: a NaN input reaches the output through every step (both
    ``minimum`` and ``maximum`` propagate it), where ``np.partition`` sorts NaN last."""
    twin = _AS_INT.get(rows.itemsize)
    # 2-D native-order rows only: the -0.0 test reads the bits in native order (a '>f8' row's
    # -0.0 would pass it) and the NaN test below takes a row's dot product.
    if twin is None or rows.size == 0 or rows.ndim != 2 or not rows.dtype.isnative:
        return None
    if rows.shape[1] > _NETWORK_MAX_COLUMNS:
        return None
    # -0.0 is the one float whose bits are the smallest integer of its size.
    if int(np.minimum.reduce(rows.view(twin[0]), axis=None)) == twin[1]:
        return None
    lanes: list[Floats] = [rows[i] for i in range(rows.shape[0])]
    n = len(lanes)
    minimum, maximum = np.minimum, np.maximum
    for i in range(kth):  # pass i leaves the i-th smallest at i, the rest after it
        for j in range(n - 1, i, -1):
            low, high = lanes[j - 1], lanes[j]
            lanes[j - 1], lanes[j] = minimum(low, high), maximum(low, high)
    picked: Floats = lanes[kth]
    for j in range(kth + 1, n):  # the last pass needs the minimum alone
        picked = minimum(picked, lanes[j])
    # Squares add up to NaN only from a NaN (inf * inf and overflow give inf).
    if math.isnan(float(picked @ picked)):
        return None
    return picked


def weighted_medians_with_each(rest: Floats, rest_w: F64, extra: Floats, extra_w: F64) -> F64:
    """Row j: the lower weighted median (as ``weighted_median``: per coordinate the smallest
    value whose cumulative weight reaches half the total) of ``rest`` plus ``extra[j]`` alone.

    Why not ``weighted_median`` once per row: the direction test (protocol/validation.py)
    judges each member of a group against the others without the rest of its group: k
    medians of nearly the same rows. One sort of ``rest`` serves them all. With ``x`` added
    (weight ``w``), the rest value at sorted position i reaches the half ``h`` when its
    cumulative weight does alone (i >= a) or with w, if x sorts at or before it (i >= b and
    i >= p, p the count of rest values below x); x itself qualifies when the rest's weight up
    to x plus w does. So each row costs two comparisons against the sorted rest, O(n d), and
    a and b one pass per distinct weight (sybil-40's 40 colluders: 14 -> 4 ms per close, the
    plain median 3 ms)."""
    k_rows = extra.shape[0]
    if rest.shape[0] == 0:
        return np.asarray(extra, dtype=np.float64).copy()
    order = np.argsort(rest, axis=0, kind="stable")
    values = np.take_along_axis(rest, order, axis=0).astype(np.float64)
    cumulative = np.cumsum(rest_w[order], axis=0)
    total = float(rest_w.sum())
    m, d = values.shape
    columns = np.arange(d)
    sentinel = np.append(values, np.full((1, d), np.inf), axis=0)  # position m: none
    reached: dict[float, tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], float]] = {}
    out = np.empty((k_rows, d), dtype=np.float64)
    step = max(1, _BLOCK // max(1, m * d))  # extra rows per block: bounded temporaries
    for lo in range(0, k_rows, step):
        xs = np.asarray(extra[lo : lo + step], dtype=np.float64)
        below = (values[None, :, :] < xs[:, None, :]).sum(axis=1)  # p, per row and column
        upto = (values[None, :, :] <= xs[:, None, :]).sum(axis=1)  # rest values <= x
        for j in range(xs.shape[0]):
            w = float(extra_w[lo + j])
            if w not in reached:
                half = (total + w) * (0.5 - 1e-12)
                reached[w] = (
                    _first_reaching(cumulative, half),
                    _first_reaching(cumulative, half - w),
                    half,
                )
            a, b, half = reached[w]
            first = np.minimum(a, np.maximum(b, below[j]))
            from_rest = sentinel[first, columns]
            under = np.where(upto[j] > 0, cumulative[np.maximum(upto[j] - 1, 0), columns], 0.0)
            x = xs[j]
            out[lo + j] = np.where(under + w >= half, np.minimum(x, from_rest), from_rest)
    return out


def _first_reaching(cumulative: F64, level: float) -> npt.NDArray[np.intp]:
    """Per column, the first sorted position whose cumulative weight reaches ``level`` (the
    row count where none does)."""
    reach = cumulative >= level
    first = np.argmax(reach, axis=0)
    found = reach[first, np.arange(cumulative.shape[1])]
    return np.asarray(np.where(found, first, cumulative.shape[0]), dtype=np.intp)


_BLOCK = 1 << 20  # elements of one [rows, n, d] temporary in weighted_medians_with_each


def weighted_trimmed_mean(rows: F32, weights: F64, beta: float) -> F32:
    """Per coordinate, the weighted mean of the values in the central ``1 - 2 beta`` of the
    cumulative weight (values straddling a cut count with the part of their weight inside).

    Guarantee: while the Byzantine inputs hold less than ``beta`` of the weight, each
    coordinate is a mean of values inside the honest range (Yin et al. 2018). Cost:
    O(n log n * d)."""
    if not 0.0 <= beta < 0.5:
        raise ValueError("trim beta must be in [0, 0.5)")
    n = rows.shape[0]
    if n == 1:
        return as_f32(rows[0].copy())
    values, cumulative = _sorted_with_weights(rows, weights)
    previous = np.vstack([np.zeros((1, cumulative.shape[1])), cumulative[:-1]])
    kept = np.clip(np.minimum(cumulative, 1.0 - beta) - np.maximum(previous, beta), 0.0, None)
    total = kept.sum(axis=0)
    total[total <= 0] = 1.0  # unreachable for beta < 0.5; guards a 0/0
    return as_f32((kept * values).sum(axis=0) / total)
