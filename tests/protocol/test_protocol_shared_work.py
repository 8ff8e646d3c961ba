"""Shared close-time work (robust aggregation, direction statistics): the same computation,
done once, with the same bits as each replica computing it, never a shared buffer."""

from __future__ import annotations

import math

import numpy as np

from swarm_tune.runtime.aggregation.near_duplicates import MEMO_MIN_POOL
from swarm_tune.runtime.aggregation.rules import GeometricMedian, aggregate
from swarm_tune.runtime.protocol import validation
from swarm_tune.runtime.protocol.shared_work import shared_aggregate
from swarm_tune.runtime.protocol.summary import UpdateSummary


def _rows(seed: int, n: int = 9, dim: int = 33) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(dim).astype(np.float32) for _ in range(n)]


def test_same_rows_weights_and_seed_compute_once_and_equal_the_direct_result() -> None:
    rule = GeometricMedian(8)
    rows, weights = _rows(1), [1.0] * 9
    calls: list[int] = []

    def compute() -> np.ndarray:
        calls.append(1)
        return aggregate(rule, rows, weights, 5)

    first = shared_aggregate(rule, rows, weights, 5, compute)
    second = shared_aggregate(rule, list(rows), list(weights), 5, compute)
    assert len(calls) == 1
    direct = aggregate(rule, rows, weights, 5)
    assert first.tobytes() == direct.tobytes() == second.tobytes()
    # A replica that applies its average in place must not change another's.
    assert second is not first and not np.shares_memory(first, second)
    second += 1.0
    third = shared_aggregate(rule, rows, weights, 5, compute)
    assert third.tobytes() == direct.tobytes() and len(calls) == 1


def test_other_row_objects_weights_seed_or_rule_compute_again() -> None:
    rule = GeometricMedian(8)
    rows, weights = _rows(2), [1.0] * 9
    calls: list[int] = []

    def run(r: list[np.ndarray], w: list[float], seed: int, ru: GeometricMedian) -> np.ndarray:
        def compute() -> np.ndarray:
            calls.append(1)
            return aggregate(ru, r, w, seed)

        return shared_aggregate(ru, r, w, seed, compute)

    run(rows, weights, 1, rule)
    run([r.copy() for r in rows], weights, 1, rule)  # equal values, other objects: by identity
    changed = run(rows, [2.0, *weights[1:]], 1, rule)
    run(rows, weights, 2, rule)
    run(rows, weights, 1, GeometricMedian(3))
    assert len(calls) == 5
    # A pool under MEMO_MIN_POOL (a gossip close's) is no other node's: computed each time.
    few = rows[: MEMO_MIN_POOL - 1]
    assert (
        run(few, weights[: len(few)], 1, rule).tobytes()
        == run(few, weights[: len(few)], 1, rule).tobytes()
    )
    assert len(calls) == 7
    assert changed.tobytes() == aggregate(rule, rows, [2.0, *weights[1:]], 1).tobytes()


def _summaries(seed: int, n: int, dim: int = 330) -> list[UpdateSummary]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = rng.standard_normal(dim).astype(np.float32).astype(np.float64)
        d[: dim // 3] += 0.5  # a shared direction, so the cosines spread around a centre
        out.append(UpdateSummary(1.0, int(rng.integers(1 << 60)), d, math.sqrt(float(d @ d))))
    return out


def test_direction_statistics_do_not_depend_on_the_pool_order_and_are_shared() -> None:
    pool = _summaries(3, 301)
    weights = np.ones(len(pool))
    first = validation.direction_statistics(pool, weights)
    # Another replica: the same direction objects, its own last (another order).
    order = list(range(1, len(pool))) + [0]
    other = [pool[i] for i in order]
    shared = validation.direction_statistics(other, weights * 0.5)
    direct = validation._direction_statistics(other, weights)  # computed afresh
    assert shared[0] == direct[0] == [first[0][i] for i in order]
    assert shared[1:] == direct[1:] == first[1:]
    assert len(first[0]) == len(pool) and first[2] > validation.MIN_SPREAD


def test_direction_statistics_unequal_weights_or_other_objects_are_computed_afresh() -> None:
    pool = _summaries(4, 40)
    weights = np.ones(len(pool))
    validation.direction_statistics(pool, weights)
    copies = [
        UpdateSummary(s.rms, s.fingerprint, s.direction.copy(), s.direction_norm) for s in pool
    ]
    copies[0] = UpdateSummary(1.0, 1, -3.0 * pool[0].direction, 3.0 * pool[0].direction_norm)
    assert validation.direction_statistics(copies, weights) == validation._direction_statistics(
        copies, weights
    )
    weights[:5] = 3.0
    assert validation.direction_statistics(pool, weights) == validation._direction_statistics(
        pool, weights
    )
