"""DiLoCo in the Hugging Face learner: H real inner steps, outer Nesterov, per-step equivalence."""

from __future__ import annotations

import pytest
import torch

from swarm_tune.runtime.training import HFLearner, build_learner
from swarm_tune.runtime.training.diloco import DiLoCoConfig
from swarm_tune.runtime.training.hf_learner import OptimizerName


def _learner(shard: int, diloco: DiLoCoConfig | None, opt: OptimizerName = "sgd") -> HFLearner:
    return build_learner(
        "tiny-gpt2",
        "tinytales",
        2,
        shard,
        seed=7,
        batch_size=4,
        seq_len=32,
        lr=0.1,
        optimizer=opt,
        diloco=diloco,
    )


def _rounds(learners: list[HFLearner], rounds: int) -> None:
    for _ in range(rounds):
        ups = [x.compute_update("grad").update for x in learners]
        avg = {n: torch.stack([u[n] for u in ups]).mean(0) for n in ups[0]}
        for x in learners:
            x.apply_average("grad", avg)


def test_h1_outer_sgd_lr1_is_the_per_step_path() -> None:
    plain = [_learner(s, None) for s in (0, 1)]
    dil = [_learner(s, DiLoCoConfig(1, 1.0, 0.0)) for s in (0, 1)]
    _rounds(plain, 2)
    _rounds(dil, 2)
    for a, b in zip(plain, dil, strict=True):
        for n, p in a.parameters().items():
            # float32 rounding of start - (start - lr * g) only
            assert torch.allclose(p, b.parameters()[n], rtol=0, atol=1e-6), n


def test_inner_steps_are_real_sequential_steps_and_replicas_stay_identical() -> None:
    cfg = DiLoCoConfig(inner_steps=2)
    nodes = [_learner(s, cfg, "adamw") for s in (0, 1)]
    start = {n: p.detach().clone() for n, p in nodes[0].parameters().items()}
    res = nodes[0].compute_update("grad")
    assert len(nodes[0].last_batch_indices) == 1 and res.samples == 2 * 4
    assert nodes[0].optimizer.state  # the inner AdamW took steps
    for n, p in nodes[0].parameters().items():  # back at the round's start
        assert torch.equal(p, start[n])
    assert any(float(v.abs().max()) > 0 for v in res.update.values())
    nodes[1].compute_update("grad")
    _rounds(nodes, 1)
    for n, p in nodes[0].parameters().items():
        assert torch.equal(p, nodes[1].parameters()[n]), n
        assert torch.equal(nodes[0].outer_momentum[n], nodes[1].outer_momentum[n])


@pytest.mark.parametrize("bad", [dict(inner_steps=0), dict(outer_lr=0.0), dict(outer_momentum=1.0)])
def test_bad_diloco_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DiLoCoConfig(**bad)  # type: ignore[arg-type]
