"""DiLoCo in the sim's batched surrogate: real sequential steps, per-step equivalence, a run."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.learning import PARAMS, BatchedLearning, LearningSettings
from swarm_tune.sim.scenario import parse_scenario

SMALL = dict(hidden=8, embed=4, context=3, batch_size=8, samples_per_node=64, eval_samples=64)


def _swarm(n: int, **kw: object) -> BatchedLearning:
    bl = BatchedLearning(LearningSettings(**SMALL, **kw), n, 3)  # type: ignore[arg-type]
    for i in range(n):
        bl.add_node(i, i)
    return bl


def _rounds(bl: BatchedLearning, n: int, rounds: int) -> list[torch.Tensor]:
    """Flat FedAvg rounds where everyone reaches everyone; returns each round's pseudo-grads."""
    seen = []
    for _ in range(rounds):
        for i in range(n):
            bl.request(i, "grad")
        res = bl.flush()
        ups = torch.stack([res[i].update[PARAMS] for i in range(n)])
        seen.append(ups)
        for i in range(n):
            bl.apply_average(i, "grad", {PARAMS: ups.mean(0)})
    return seen


def test_h1_outer_sgd_lr1_reproduces_the_per_step_path() -> None:
    plain = _swarm(4, optimizer="sgd", lr=0.05)
    dil = _swarm(
        4, optimizer="sgd", lr=0.05, diloco=dict(inner_steps=1, outer_lr=1, outer_momentum=0)
    )
    _rounds(plain, 4, 6)
    _rounds(dil, 4, 6)
    a, b = plain.mean_params(range(4))[PARAMS], dil.mean_params(range(4))[PARAMS]
    assert float((a - b).abs().max()) <= 1e-6  # float32 rounding of start - (start - lr g)
    assert plain.eval_losses(range(4)) == pytest.approx(dil.eval_losses(range(4)), abs=1e-6)


def test_inner_steps_are_sequential_and_differ_from_accumulation() -> None:
    h = 4
    seq = _swarm(
        2, optimizer="sgd", lr=0.05, diloco=dict(inner_steps=h, outer_lr=1, outer_momentum=0)
    )
    acc = _swarm(2, optimizer="sgd", lr=0.05, local_steps=h)  # one gradient over H batches
    (d_seq,) = _rounds(seq, 2, 1)
    (g_acc,) = _rounds(acc, 2, 1)
    # both drew the same H * batch samples per node ...
    assert torch.equal(seq._cursor[:2], acc._cursor[:2])
    # ... but H sequential steps are not one step on their mean gradient
    assert float((d_seq - 0.05 * h * g_acc).abs().max()) > 1e-4


def test_outer_momentum_is_identical_across_replicas_and_run_learns() -> None:
    bl = _swarm(3, diloco=dict(inner_steps=5))
    before = bl.eval_losses(range(3))
    _rounds(bl, 3, 4)
    assert bl.divergence(range(3)) == 0.0
    assert torch.equal(bl._outer_b[0], bl._outer_b[1]) and bool(bl._outer_b[0].abs().sum() > 0)
    assert max(bl.eval_losses(range(3))) < min(before)


@pytest.mark.parametrize(
    "bad", [{"inner_steps": 0}, {"outer_lr": 0}, {"outer_momentum": 1.0}, {"h": 3}]
)
def test_bad_diloco_block_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        LearningSettings(diloco=bad)  # type: ignore[arg-type]


def test_sim_run_rounds_span_h_steps() -> None:
    text = """
name: diloco
seed: 2
nodes: {count: 3}
compute:
  classes: [{step_time: {dist: lognormal, median: 1.0, sigma: 0.01}}]
learning: {hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 64,
           eval_samples: 64, diloco: {inner_steps: 10}}
protocol: {quorum: 1.0, round_timeout: 30, heartbeat_interval: 2, eviction_timeout: 20,
           compression: fp16}
rounds: {target: 4}
"""
    driver = SimDriver(parse_scenario(text))
    result = driver.run()
    assert result.stop_reason == "target_round"
    assert result.virtual_s >= 4 * 10 * 0.9  # each round is H = 10 modelled steps
    assert driver.engine.divergence(range(3)) < 1e-6


def test_state_sync_carries_the_outer_momentum_over_the_wire() -> None:
    from swarm_tune.runtime.net.protocol_codec import from_envelope, to_envelope
    from swarm_tune.runtime.protocol import ProtocolConfig, StateResponse
    from swarm_tune.runtime.protocol.effects import LoadState, ServeState
    from swarm_tune.runtime.protocol.sync import decide
    from swarm_tune.runtime.training.bridge import LearnerBridge
    from swarm_tune.runtime.wire import Identity, decode, encode

    bl = _swarm(3, diloco=dict(inner_steps=2))
    _rounds(bl, 2, 2)  # nodes 0 and 1 trained together; node 2 is a fresh joiner
    views = [bl.add_node(i, i) for i in range(3)]
    cfg = ProtocolConfig()
    ident = Identity.from_seed(bytes(range(32)))
    responses = {}
    for i in (0, 1):
        resp = LearnerBridge(views[i], cfg).state_response(ServeState("x", 7), 2)
        assert resp.outer and torch.equal(resp.outer[PARAMS], bl._outer_b[i])
        env = decode(
            bytes(encode(to_envelope(resp, "r", ident.peer_id), ident)), expected_run_id="r"
        )
        got = from_envelope(env)
        assert isinstance(got, StateResponse) and torch.equal(got.outer[PARAMS], resp.outer[PARAMS])
        responses[f"p{i}"] = got
    decision = decide(responses, bl.spec, cfg.drift_bound)
    assert decision is not None
    LearnerBridge(views[2], cfg).load(
        LoadState(decision.round, decision.tensors, decision.digest, decision.outer)
    )
    assert torch.equal(bl._outer_b[2], bl._outer_b[0])
    assert torch.equal(bl.parameters(2)[PARAMS], bl.parameters(0)[PARAMS])
    # a response whose outer state does not fit the model is not a valid response
    bad = StateResponse(7, 2, "d", (), bl.parameters(0), {PARAMS: torch.zeros(3)})
    assert decide({"p0": bad}, bl.spec, cfg.drift_bound) is None


def test_round_timeout_shorter_than_h_steps_is_refused() -> None:
    from swarm_tune.sim.scenario import ScenarioError

    text = """
name: too-short
nodes: {count: 2}
compute: {classes: [{step_time: {dist: constant, value: 1.0}}]}
learning: {diloco: {inner_steps: 50}}
protocol: {round_timeout: 30}
"""
    with pytest.raises(ScenarioError, match="round_timeout"):
        parse_scenario(text)
    parse_scenario(text.replace("round_timeout: 30", "round_timeout: 60"))
