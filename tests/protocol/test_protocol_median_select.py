"""The fast paths of the per-close statistics give the reference computation's bits.

Why pinned: the direction test, the geometric median and near-duplicate grouping run at every
round close on every node, and same seed -> identical tables requires each shortcut to give
exactly the value of the computation it replaced, ties, NaN and infinities included:

* ``weighted_median``: equal weights select (np.partition); other weights sort each
  coordinate on the transposed rows and gather only the chosen value (the reference is the
  sort along axis 0 with take_along_axis); up to six equal-weight rows take min/max steps,
  whose bits must be np.partition's, the select they replaced, even for signed zeros and NaN;
* ``geometric_median``: over GRAM_MAX_ROWS rows, ``np.linalg.norm`` spelled out (the
  reference keeps the call); up to it, the Gram-form steps, equal to the reference up to
  rounding (the decision that tables may change at that level when the arithmetic is
  re-organised: scale-10k's pools agree after float32 rounding), on hostile pools too, with
  at most one float64 copy of the rows;
* near-duplicates' ``_median``: ``np.median``'s own steps.
* ``weighted_medians_with_each``: one sort of the rest for many extra rows (the reference is
  ``weighted_median`` of the rest plus each row).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np

from swarm_tune.runtime.aggregation.centered import GRAM_MAX_ROWS, SMOOTHING, geometric_median
from swarm_tune.runtime.aggregation.coordinate import (
    _NETWORK_MAX_COLUMNS,
    _kth_smallest,
    _sorted_with_weights,
    weighted_median,
    weighted_medians_with_each,
)
from swarm_tune.runtime.aggregation.near_duplicates import _median


def _by_sort(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    values, cumulative = _sorted_with_weights(rows, weights)
    index = np.argmax(cumulative >= 0.5 - 1e-12, axis=0)
    return np.take_along_axis(values, index[None, :], axis=0)[0].astype(np.float32)


def _geometric_median_reference(
    rows: np.ndarray, weights: np.ndarray, iterations: int
) -> np.ndarray:
    x = rows.astype(np.float64)
    w = weights / weights.sum()
    z = _by_sort(rows, w).astype(np.float64)
    scale = float(np.abs(x).max()) or 1.0
    for _ in range(iterations):
        distances = np.maximum(np.linalg.norm(x - z, axis=1), SMOOTHING * scale)
        alpha = w / distances
        z = alpha @ x / alpha.sum()
    return z.astype(np.float32)


def _assert_close_to_reference(rows: np.ndarray, weights: np.ndarray) -> None:
    """The Gram-form result within a few float32 roundings of the reference's, relative to
    the pool's spread (a Weiszfeld step is a weighted mean: its error scales with it)."""
    got = geometric_median(rows, weights, 8)
    want = _geometric_median_reference(rows, weights, 8)
    assert np.all(np.isfinite(got)), rows.shape
    spread = float(np.ptp(rows.astype(np.float64), axis=0).max())
    ulp = float(np.spacing(np.float32(np.abs(rows).max())))
    assert float(np.abs(got.astype(np.float64) - want).max()) <= 1e-6 * spread + 2 * ulp


def test_gram_geometric_median_on_hostile_pools() -> None:
    # Where the Gram expansion cancels: rows far from 0 with a tiny spread, exact copies (the
    # centre sits on one: its distance is rounding noise, clamped and floored), two rows of
    # unequal weight, near-copies 1e-7 apart, all-equal rows, a far outlier.
    rng = np.random.default_rng(19)
    base = rng.standard_normal(1217)
    pools = [
        1e4 + rng.standard_normal((5, 300)) * 1e-2,
        np.repeat(base[None, :], 4, axis=0),
        np.vstack([np.repeat(base[None, :], 3, axis=0), base + 1.0, base - 1.0]),
        np.vstack([base, base + 1.0]),
        base + rng.standard_normal((4, 1217)) * 1e-7,
        np.vstack([base + rng.standard_normal((4, 1217)) * 0.1, base * 1e6]),
    ]
    for i, pool in enumerate(pools):
        rows = pool.astype(np.float32)
        for weights in (np.ones(len(rows)), np.arange(1.0, len(rows) + 1)):
            _assert_close_to_reference(rows, weights)
        if i == 1:  # all equal: the row itself
            assert np.array_equal(geometric_median(rows, np.ones(4), 8), rows[0])


def test_gram_geometric_median_makes_one_float64_copy_of_big_rows() -> None:
    # A real node's few whole-update rows: the row-space steps peaked at 3.25x the float64
    # rows here (them, a step's difference array, |x|, a row); the Gram form holds one copy
    # and two rows (the centre, the final combination): 1.5x. (~0.05 s)
    rows = np.random.default_rng(3).standard_normal((4, 1 << 17)).astype(np.float32)
    tracemalloc.start()
    try:
        geometric_median(rows, np.ones(4), 8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (rows.size + 2.5 * rows.shape[1]) * 8, peak / (rows.size * 8)


def test_weighted_median_paths_give_the_sorted_lower_median_bit_for_bit() -> None:
    rng = np.random.default_rng(19)
    for trial in range(200):
        n, d = int(rng.integers(2, 60)), int(rng.integers(1, 9))
        if trial % 2:  # many ties
            rows = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
        else:
            rows = rng.standard_normal((n, d)).astype(np.float64)
        if trial % 3:
            weights = np.full(n, float(rng.choice([1.0, 0.37, 5.0])))
        else:  # unequal: the transposed sort
            weights = rng.random(n) + rng.choice([0.0, 0.5])
        got = weighted_median(rows, weights)
        assert np.array_equal(got, _by_sort(rows, weights)), (n, d)
    rows = np.arange(12.0).reshape(6, 2)
    with np.errstate(invalid="ignore"):  # 0/0: both paths take the sort's first value
        zeros = np.zeros(6)
        assert np.array_equal(weighted_median(rows, zeros), _by_sort(rows, zeros))


def test_few_equal_rows_give_the_bits_of_the_select_they_replaced() -> None:
    # A gossip close's medians (2-6 rows): the min/max steps or, for -0.0 or NaN, the select.
    rng = np.random.default_rng(27)
    special = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan])
    for trial in range(300):
        n, d = int(rng.integers(2, 7)), int(rng.integers(1, 12))
        rows = rng.standard_normal((n, d))
        if trial % 3:  # ties, signed zeros, infinities, NaN
            mask = rng.random((n, d)) < (0.5 if trial % 3 == 1 else 0.1)
            rows[mask] = rng.choice(special[: 4 if trial % 2 else 7], size=int(mask.sum()))
        rows = rows.astype(np.float32 if trial % 2 else np.float64)
        if trial % 5 == 0:
            rows = np.asfortranarray(rows)[:, ::-1]  # strided rows
        kth = (n + 1) // 2 - 1
        want = np.partition(rows, kth, axis=0)[kth].astype(np.float32)
        assert weighted_median(rows, np.full(n, 0.3)).tobytes() == want.tobytes(), trial
    # Byte-swapped rows (the -0.0 test reads native bits: it would miss this -0.0), rows
    # wider than the column cap (the steps' peak memory) and rows of more than 2-D take the
    # select.
    swapped = np.array([[-0.0], [0.0], [0.0], [1.0], [-1.0], [-1.0]], dtype=">f8")
    want = np.partition(swapped, 2, axis=0)[2].astype(np.float32)
    assert weighted_median(swapped, np.ones(6)).tobytes() == want.tobytes()
    assert _kth_smallest(np.ones((3, _NETWORK_MAX_COLUMNS + 1), np.float32), 1) is None
    assert _kth_smallest(np.ones((3, 2, 2), np.float32), 1) is None
    assert _kth_smallest(np.ones((3, 2), np.float32), 1) is not None


def test_geometric_median_and_pair_median_keep_their_reference_bits() -> None:
    rng = np.random.default_rng(7)
    for trial in range(40):
        n, d = int(rng.integers(2, 12)), int(rng.integers(1, 40))
        rows: np.ndarray = (rng.standard_normal((n, d)) * 10.0 ** rng.integers(-3, 3)).astype(
            np.float32
        )
        weights = rng.random(n) + 0.1 if trial % 2 else np.ones(n)
        _assert_close_to_reference(rows, weights)
    # Over GRAM_MAX_ROWS the row-space steps: the reference's bits.
    rows = rng.standard_normal((GRAM_MAX_ROWS + 1, 30)).astype(np.float32)
    weights = rng.random(GRAM_MAX_ROWS + 1) + 0.1
    got = geometric_median(rows, weights, 8)
    assert np.array_equal(got, _geometric_median_reference(rows, weights, 8))
    with np.errstate(invalid="ignore"):
        for n in range(1, 30):
            v = np.maximum(rng.standard_normal(n), 0.0)
            if n % 4 == 0:
                v[: n // 2] = v[-1]  # ties
            for extra in (None, math.inf, math.nan):
                if extra is not None:
                    v[int(rng.integers(n))] = extra
                want, med = float(np.median(v)), _median(v)
                assert (math.isnan(want) and math.isnan(med)) or (
                    np.float64(want).tobytes() == np.float64(med).tobytes()
                ), (n, extra)


def test_medians_with_each_extra_row_equal_the_plain_weighted_median() -> None:
    # The direction test's leave-the-group-out references (validation.py) come from one sort
    # of the rest; each must be the median of the rest plus that row, ties and weights too.
    rng = np.random.default_rng(7)
    for case in range(150):
        rest = rng.standard_normal((int(rng.integers(0, 9)), 6))
        extra = rng.standard_normal((int(rng.integers(1, 4)), 6))
        if case % 3 == 0:  # ties within the rest and with the extra rows
            rest, extra = np.round(rest), np.round(extra)
        rest_w = rng.integers(1, 4, len(rest)) * (1.0 if case % 2 else 0.37)
        extra_w = rng.integers(1, 4, len(extra)) * (1.0 if case % 2 else 0.37)
        got = weighted_medians_with_each(rest, rest_w, extra, extra_w)
        for j in range(len(extra)):
            rows = np.vstack([rest, extra[j : j + 1]])
            want = weighted_median(rows, np.concatenate([rest_w, extra_w[j : j + 1]]))
            assert np.array_equal(got[j].astype(np.float32), want), (case, j)
