"""The batched digest/sketch/split paths give exactly what the core's per-node functions give.

The driver reads every training node's digest and sketch once per round; the batched forms
exist only for speed, so they must agree bit for bit with ``tensors.param_digest`` and
``tensors.param_sketch`` (which the real runtime uses), whatever state the rows are in.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.protocol.tensors import param_digest, param_sketch
from swarm_tune.sim.learning import BatchedLearning, LearningSettings


def _swarm(n: int, task: str, optimizer: str) -> BatchedLearning:
    bl = BatchedLearning(
        LearningSettings.model_validate({"task": task, "optimizer": optimizer}), n, 3
    )
    for i in range(n):
        bl.add_node(i, i)
    return bl


@settings(max_examples=12, deadline=None)
@given(
    task=st.sampled_from(["char-lm", "classification"]),
    optimizer=st.sampled_from(["adam", "sgd"]),
    kinds=st.lists(st.sampled_from(["grad", "params"]), min_size=6, max_size=6),
    pick=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=6),
    size=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_batched_digests_sketches_and_updates_match_per_node(
    task: str, optimizer: str, kinds: list[str], pick: list[int], size: int, seed: int
) -> None:
    bl = _swarm(6, task, optimizer)
    for i, kind in enumerate(kinds):
        bl.request(i, "params" if kind == "params" else "grad")
    results = bl.flush()
    # Queue averages on some rows: the batched reads must settle them first, like reads do.
    for i in pick:
        bl.apply_average(i, "grad", results[0].update)
    nodes = sorted(set(pick)) + [5]
    got_digests = bl.param_digests(nodes)
    got_sketches = bl.param_sketches(nodes, size, seed)
    for pos, i in enumerate(nodes):
        params = {k: v.clone() for k, v in bl.parameters(i).items()}
        assert got_digests[pos] == param_digest(params)
        assert got_sketches[pos] == param_sketch(params, size, seed)
    # Results split in batch equal the rows they came from.
    for i, kind in enumerate(kinds):
        upd = results[i].update
        if kind == "params":
            continue  # later steps moved the row; checked by the digest test above
        assert all(t.is_contiguous() for t in upd.values())
        assert set(upd) == {name for name, _ in bl.spec.tensors}
        assert all(torch.isfinite(t).all() for t in upd.values())


def test_different_rows_get_different_digests_and_sketches() -> None:
    bl = _swarm(2, "char-lm", "adam")
    bl.request(0, "grad")  # row 0 takes an optimizer step, row 1 stays at init
    bl.apply_average(0, "grad", bl.flush()[0].update)
    a, b = bl.param_digests([0, 1])
    assert a != b and b == param_digest(bl.parameters(1))
    sa, sb = bl.param_sketches([0, 1], 64, 7)
    assert sa != sb


def test_empty_batches() -> None:
    bl = _swarm(2, "char-lm", "adam")
    assert bl.param_digests([]) == []
    assert bl.param_sketches([], 8, 1) == []
