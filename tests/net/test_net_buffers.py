"""Reused memory for group averages (net/buffers.AverageBuffers): lent to the core, back
only once the learner applied the average, and only when the applied tensors are views of
the lent buffer (a copy, e.g. a bf16 model's, gives nothing back and pins nothing)."""

from __future__ import annotations

import torch

from swarm_tune.runtime.net.buffers import LENT_AVERAGES, AverageBuffers


def test_an_applied_average_is_reused_and_nothing_else_is() -> None:
    pool = AverageBuffers()
    first = pool.take(12)
    views = dict(zip(("a", "b"), torch.split(torch.from_numpy(first), [4, 8]), strict=True))
    pool.give({"b": views["b"], "a": views["a"]})  # any order of names
    assert pool.take(12) is first and pool.reused == 1
    pool.give({"x": torch.zeros(12)})  # not lent (a flat round's average): ignored
    other = pool.take(12)
    assert other is not first and pool.reused == 1
    for _ in range(3 * LENT_AVERAGES):  # given back as copies (bf16): never reused
        copy = torch.from_numpy(pool.take(12)).to(torch.bfloat16)
        pool.give({"a": copy})
    assert len(pool._lent) <= LENT_AVERAGES and pool.reused == 1
    two = AverageBuffers(keep=2)  # free arrays of two shapes: the fitting one is found
    a, b = two.take(8), two.take(12)
    two.give({"a": torch.from_numpy(a)})
    two.give({"a": torch.from_numpy(b)})
    assert two.take(12) is b and two.take(8) is a and two.reused == 2
