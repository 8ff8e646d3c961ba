"""``mode: real``: per-node Hugging Face learners behind the same batched API."""

from __future__ import annotations

import pytest
import torch

from swarm_tune.runtime.training.hf_learner import HFLearner
from swarm_tune.sim.learning import BatchedLearning, LearningSettings
from swarm_tune.sim.learning_real import RealLearningError


@pytest.mark.slow
def test_real_mode_trains_tiny_gpt2_per_node() -> None:
    s = LearningSettings(
        mode="real", model_name="tiny-gpt2", batch_size=4, seq_len=32, lr=0.01, optimizer="sgd"
    )
    bl = BatchedLearning(s, 2, seed=3)
    learners = [bl.add_node(i, i) for i in range(2)]
    assert all(isinstance(x, HFLearner) for x in learners)
    assert bl.spec.mismatch(bl.parameters(0)) is None
    assert bl.payload_bytes() == bl.spec.numel * 4
    nodes = [0, 1]
    assert bl.divergence(nodes) == 0.0  # same seed: same initial weights
    before = bl.mean_eval_loss(nodes)
    for _ in range(3):
        for i in nodes:
            bl.request(i, "grad")
        res = bl.flush()
        avg = {n: torch.stack([res[i].update[n] for i in nodes]).mean(dim=0) for n in res[0].update}
        for i in nodes:
            bl.apply_average(i, "grad", avg)
    assert bl.param_digest(0) == bl.param_digest(1)
    after = bl.mean_eval_loss(nodes)
    assert after < before
    assert bl.eval_losses(nodes) == pytest.approx([after, after], rel=1e-5)
    bl.request(0, "params")
    bl.flush()
    assert bl.divergence(nodes) == 0.0  # a parameter round takes no local step
    bl.request(0, "grad")
    solo = bl.flush()[0].update
    bl.apply_average(0, "grad", solo)  # node 0 steps alone: the replicas part
    assert bl.divergence(nodes) > 0.0
    with pytest.raises(RealLearningError):
        bl.request(5, "grad")


def test_real_mode_refuses_large_swarms() -> None:
    with pytest.raises(RealLearningError):
        BatchedLearning(LearningSettings(mode="real"), 1000, 0)
