"""The equal-weight fast path of ``weighted_median`` (a selection) gives the sort's bits.

Why pinned: the direction test runs it at every round close on every node, and same seed ->
identical tables requires the shortcut to pick exactly the value the sort picked, ties included.
"""

from __future__ import annotations

import numpy as np

from swarm_tune.runtime.aggregation.coordinate import _sorted_with_weights, weighted_median


def _by_sort(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    values, cumulative = _sorted_with_weights(rows, weights)
    index = np.argmax(cumulative >= 0.5 - 1e-12, axis=0)
    return np.take_along_axis(values, index[None, :], axis=0)[0].astype(np.float32)


def test_equal_weights_select_the_sorted_lower_median_bit_for_bit() -> None:
    rng = np.random.default_rng(19)
    for trial in range(300):
        n, d = int(rng.integers(2, 60)), int(rng.integers(1, 9))
        if trial % 2:  # many ties
            rows = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
        else:
            rows = rng.standard_normal((n, d)).astype(np.float64)
        weights = np.full(n, float(rng.choice([1.0, 0.37, 5.0])))
        got = weighted_median(rows, weights)
        assert np.array_equal(got, _by_sort(rows, weights)), (n, d)
    # unequal (and all-zero) weights still take the sort
    rows = np.arange(12.0).reshape(6, 2)
    weights = np.array([5.0, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert np.array_equal(weighted_median(rows, weights), _by_sort(rows, weights))
    with np.errstate(invalid="ignore"):  # 0/0: both paths take the sort's first value
        zeros = np.zeros(6)
        assert np.array_equal(weighted_median(rows, zeros), _by_sort(rows, zeros))
