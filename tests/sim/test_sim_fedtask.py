"""The standard federated task in the sim: linear/deep models, Gaussian mixture, local epochs.

Why these checks: the Flower head-to-head is only fair if the sim computes the same thing —
a logistic regression (no hidden layer), E local epochs of sequential SGD steps, and FedAvg
of the results — and reports held-out accuracy, the figure Flower reports.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.learning import PARAMS, BatchedLearning, LearningSettings
from swarm_tune.sim.learning_model import batched_logits, init_params
from swarm_tune.sim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[2]
MIXTURE = dict(
    task="classification",
    generator="gaussian-mixture",
    features=6,
    classes=4,
    samples_per_node=40,
    batch_size=8,
    eval_samples=64,
    pool_size=512,
    optimizer="sgd",
    lr=0.1,
)


def _swarm(n: int, **kw: object) -> BatchedLearning:
    bl = BatchedLearning(LearningSettings(**{**MIXTURE, **kw}), n, 5)  # type: ignore[arg-type]
    for i in range(n):
        bl.add_node(i, i)
    return bl


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_model_depth_matches_a_plain_torch_forward(depth: int) -> None:
    bl = _swarm(1, hidden_layers=depth, hidden=5)
    named = bl.named(bl.parameters(0)[PARAMS])
    assert sorted(named) == sorted([f"{p}{i}" for i in range(1, depth + 2) for p in ("w", "b")])
    x = bl.data.eval.inputs[0]
    for layer in range(1, depth + 2):  # tanh between layers, none after the last
        x = x @ named[f"w{layer}"] + named[f"b{layer}"]
        x = torch.tanh(x) if layer <= depth else x
    got = batched_logits({k: v[None] for k, v in named.items()}, bl.data.eval)[0]
    assert torch.allclose(got, x, atol=1e-5)
    assert bl.numel == sum(t.numel() for t in named.values())


def test_one_hidden_layer_draws_the_historical_initial_weights() -> None:
    s = LearningSettings(task="classification", features=7, classes=3, hidden=5)
    got = init_params(s, 0, 3, seed=11)
    gen = torch.Generator().manual_seed(11)  # the model before depth was a setting
    w1 = torch.randn(7, 5, generator=gen) / math.sqrt(7)
    w2 = torch.randn(5, 3, generator=gen) / math.sqrt(5)
    assert torch.equal(got["w1"], w1) and torch.equal(got["w2"], w2)


def test_local_epochs_is_fedavg_and_round_trips() -> None:
    s = LearningSettings(samples_per_node=200, batch_size=32, local_epochs=2, optimizer="sgd")
    assert s.diloco is not None
    assert (s.diloco.inner_steps, s.diloco.outer_lr, s.diloco.outer_momentum) == (14, 1.0, 0.0)
    assert LearningSettings(**s.model_dump()) == s  # a resolved scenario reloads
    with pytest.raises(ValidationError, match="give one of the two"):
        LearningSettings(local_epochs=1, diloco={"inner_steps": 3})


def test_a_fedavg_round_is_the_mean_of_each_clients_sequential_sgd_steps() -> None:
    n, h = 3, 5  # samples 40 at batch 8: 1 epoch = 5 steps
    fed = _swarm(n, hidden_layers=0, local_epochs=1)
    assert fed.settings.diloco is not None and fed.settings.diloco.inner_steps == h
    start = fed.parameters(0)[PARAMS].clone()
    res = {}
    for i in range(n):
        fed.request(i, "grad")
    res = fed.flush()
    mean = torch.stack([res[i].update[PARAMS] for i in range(n)]).mean(0)
    for i in range(n):
        fed.apply_average(i, "grad", {PARAMS: mean})
    # Reference: every client alone takes h plain SGD steps (the per-step path, same batches).
    ref = _swarm(n, hidden_layers=0)
    for _ in range(h):
        for i in range(n):
            ref.request(i, "grad")
        out = ref.flush()
        for i in range(n):
            ref.apply_average(i, "grad", out[i].update)
    expected = ref.mean_params(range(n))[PARAMS]
    got = fed.parameters(0)[PARAMS]
    assert not torch.equal(got, start)
    assert float((got - expected).abs().max()) <= 1e-5
    assert fed.divergence(range(n)) == 0.0


def test_gaussian_mixture_labels_cover_every_class_and_clusters_separate() -> None:
    bl = _swarm(1, separation=3.0)
    labels = bl.data.labels
    assert set(labels.tolist()) == set(range(4))
    centroids = torch.stack([bl.data.features[labels == c].mean(0) for c in range(4)])
    nearest = torch.cdist(bl.data.features, centroids).argmin(1)
    assert float((nearest == labels).float().mean()) > 0.9


def _flower_task(nodes: int) -> dict[str, object]:
    data = yaml.safe_load((ROOT / "scenarios" / "flower-task.yaml").read_text())
    data["nodes"]["count"] = nodes
    return data


def test_flower_task_scenario_reaches_high_accuracy_deterministically() -> None:
    def run() -> tuple[list[float], list[float]]:
        driver = SimDriver(scenario_from_data(_flower_task(8)))
        result = driver.run()
        assert result.stop_reason == "target_round"
        swarm = driver.rec.tables()["swarm"].to_pandas()
        return swarm["round"].tolist(), swarm["eval_acc_mean_model"].tolist()

    rounds, acc = run()
    assert rounds == [0, 1, 2, 3, 4, 5]  # measured every round, stopped at 5
    assert acc[0] < 0.3 and acc[-1] > 0.9
    assert run() == (rounds, acc)
