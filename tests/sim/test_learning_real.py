"""``mode: real``: per-node Hugging Face learners behind the same batched API."""

from __future__ import annotations

import pytest
import torch

from swarm_tune.runtime.training.hf_learner import HFLearner
from swarm_tune.runtime.training.layer_shard import LayerShard
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


@pytest.mark.slow
def test_real_mode_layer_shards_train_their_slices_and_assemble() -> None:
    s = LearningSettings(
        mode="real", model_name="tiny-gpt2", batch_size=4, seq_len=32, lr=0.01, optimizer="sgd"
    )
    bl = BatchedLearning(s, 2, seed=3, layer_shards=2)
    for i in range(2):
        bl.add_node(i, i, LayerShard(i, 2))
    slices = [set(bl.parameters(i)) for i in range(2)]
    whole = {name for name, _ in bl.spec.tensors}
    assert slices[0].isdisjoint(slices[1]) and slices[0] | slices[1] == whole
    start = bl.mean_params([0, 1])
    for i in range(2):
        bl.request(i, "grad")
    for i, r in bl.flush().items():
        bl.apply_average(i, "grad", r.update)
    # The assembled model: each node's slice where it trains, the start where nobody does.
    both, alone = bl.mean_params([0, 1]), bl.mean_params([0])
    for name in whole:
        owner = 0 if name in slices[0] else 1
        assert torch.equal(both[name], bl.parameters(owner)[name])
        expected = bl.parameters(0)[name] if owner == 0 else start[name]
        assert torch.equal(alone[name], expected)
    assert bl.divergence([0, 1]) == 0.0  # one node per slice: each is its slice's mean
