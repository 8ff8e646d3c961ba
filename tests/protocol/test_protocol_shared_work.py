"""The shared robust-aggregation result: the same computation, done once, never a shared buffer."""

from __future__ import annotations

import numpy as np

from swarm_tune.runtime.aggregation.rules import GeometricMedian, aggregate
from swarm_tune.runtime.protocol.shared_work import shared_aggregate


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
    assert changed.tobytes() == aggregate(rule, rows, [2.0, *weights[1:]], 1).tobytes()
