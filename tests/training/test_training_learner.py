"""HFLearner with real tiny transformers models on the shipped corpus."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch

from swarm_tune.runtime.ops.checkpoint import param_digest
from swarm_tune.runtime.protocol import ProtocolConfig
from swarm_tune.runtime.protocol.effects import LoadState, ServeState
from swarm_tune.runtime.protocol.sync import decide
from swarm_tune.runtime.protocol.tensors import ModelSpec
from swarm_tune.runtime.training import (
    DeviceUnavailableError,
    HFLearner,
    Learner,
    LearnerStateError,
    ModelLoadError,
    build_learner,
    load_model,
    resolve_device,
)
from swarm_tune.runtime.training.bridge import LearnerBridge


def local_step(learner: HFLearner) -> float:
    """One training step on the node's own data alone (a round averaged with nobody)."""
    result = learner.compute_update("grad")
    learner.apply_average("grad", result.update)
    return result.loss


def _sgd(shard: int, *, num_shards: int = 2, lr: float = 0.1, **kw: object) -> HFLearner:
    return build_learner(
        "tiny-gpt2",
        "tinytales",
        num_shards,
        shard,
        seed=7,
        batch_size=4,
        seq_len=32,
        lr=lr,
        optimizer="sgd",
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_tiny_models_build_offline_and_deterministically(name: str) -> None:
    a = load_model(name, seed=3, vocab_size=700)
    b = load_model(name, seed=3, vocab_size=700)
    c = load_model(name, seed=4, vocab_size=700)
    pa = dict(a.named_parameters())
    assert param_digest(pa) == param_digest(dict(b.named_parameters()))
    assert param_digest(pa) != param_digest(dict(c.named_parameters()))
    assert 50_000 < sum(p.numel() for p in pa.values()) < 1_000_000
    assert a.training


def test_load_model_does_not_disturb_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("tiny-llama", seed=9, vocab_size=300)
    assert torch.equal(torch.rand(3), expected)


def test_device_and_model_errors_are_typed() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceUnavailableError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(DeviceUnavailableError):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ModelLoadError):
        load_model("tiny-gpt2", dtype="float8")
    with pytest.raises(ModelLoadError):
        load_model("/nonexistent/local/model/folder")


def test_bfloat16_tiny_model() -> None:
    m = load_model("tiny-gpt2", dtype="bf16", vocab_size=300)
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_loss_falls_over_thirty_local_steps(name: str) -> None:
    learner: Learner = build_learner(
        name, "tinytales", 2, 0, seed=1, batch_size=8, seq_len=64, lr=3e-3
    )
    before = learner.evaluate()
    t0 = time.perf_counter()
    losses = [local_step(learner) for _ in range(30)]
    per_step = (time.perf_counter() - t0) / 30
    after = learner.evaluate()
    print(f"{name}: held-out {before:.3f} -> {after:.3f}, {per_step * 1e3:.1f} ms/step")
    assert before > 6.0  # about ln(vocab) at init
    assert after < before - 1.5
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5


def test_same_seed_same_shard_is_bit_reproducible() -> None:
    a, b = _sgd(0), _sgd(0)
    la = [local_step(a) for _ in range(3)]
    lb = [local_step(b) for _ in range(3)]
    assert la == lb
    assert param_digest(a.parameters()) == param_digest(b.parameters())
    # A different shard walks different data.
    assert _sgd(1).compute_update("grad").loss != la[0]


def test_grad_average_of_two_learners_is_one_step_on_the_average() -> None:
    a, b = _sgd(0, lr=0.05), _sgd(1, lr=0.05)
    before = {n: p.detach().clone() for n, p in a.parameters().items()}
    assert param_digest(before) == param_digest(b.parameters())  # same init on every node
    ra, rb = a.compute_update("grad"), b.compute_update("grad")
    for t in ra.update.values():
        assert t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad
    assert ra.samples == 4
    avg = {n: (ra.update[n] + rb.update[n]) / 2 for n in ra.update}
    a.apply_average("grad", avg)
    b.apply_average("grad", avg)
    for n, p in a.parameters().items():
        torch.testing.assert_close(p.detach(), before[n] - 0.05 * avg[n])
    assert param_digest(a.parameters()) == param_digest(b.parameters())  # replicas agree


def test_averaged_grads_equal_the_pooled_batch_gradient() -> None:
    """Data parallelism: mean of per-node gradients == gradient of the union batch."""
    a, b = _sgd(0), _sgd(1)
    ra, rb = a.compute_update("grad"), b.compute_update("grad")
    pooled = torch.cat(
        [
            a.train_data.input_ids[a.last_batch_indices[0]],
            b.train_data.input_ids[b.last_batch_indices[0]],
        ]
    )
    ref = _sgd(0).model  # same config as the learners (vocab, positions), same seed
    ref.zero_grad()
    ref(input_ids=pooled, labels=pooled).loss.backward()
    for n, p in ref.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(p.grad, (ra.update[n] + rb.update[n]) / 2, rtol=1e-4, atol=1e-6)


def test_local_steps_accumulate_micro_batches() -> None:
    a = _sgd(0, local_steps=3)
    r = a.compute_update("grad")
    assert r.samples == 12 and len(a.last_batch_indices) == 3
    rows = torch.cat(a.last_batch_indices)
    assert len(set(rows.tolist())) == 12  # no row twice within an epoch


def test_params_kind_returns_current_params_and_keeps_optimizer_state() -> None:
    a = build_learner("tiny-gpt2", "tinytales", 2, 0, seed=2, batch_size=4, seq_len=32)
    b = build_learner("tiny-gpt2", "tinytales", 2, 1, seed=2, batch_size=4, seq_len=32)
    a.apply_average("grad", a.compute_update("grad").update)  # one real Adam step first
    b.apply_average("grad", b.compute_update("grad").update)
    before = {n: p.detach().clone() for n, p in a.parameters().items()}
    ra, rb = a.compute_update("params"), b.compute_update("params")
    assert a.steps_taken == 1  # no local step on a parameter round
    assert all(torch.equal(ra.update[n], before[n]) for n in before)
    assert math.isfinite(ra.loss)
    avg = {n: (ra.update[n] + rb.update[n]) / 2 for n in ra.update}
    a.apply_average("params", avg)
    b.apply_average("params", avg)
    assert param_digest(a.parameters()) == param_digest(avg) == param_digest(b.parameters())
    state = a.optimizer.state[a.parameters()["transformer.wte.weight"]]
    assert int(state["step"]) == 1  # Adam moments survive the sync


def test_load_state_replaces_parameters_and_rejects_bad_state() -> None:
    a, b = _sgd(0), _sgd(1)
    for _ in range(2):
        local_step(b)
    assert param_digest(a.parameters()) != param_digest(b.parameters())
    snap = {n: t.detach().clone() for n, t in b.parameters().items()}
    a.load_state(snap)
    assert param_digest(a.parameters()) == param_digest(b.parameters())
    # Tied output embedding follows the loaded input embedding.
    model: Any = a.model
    assert model.get_output_embeddings().weight.data_ptr() == (
        a.parameters()["transformer.wte.weight"].data_ptr()
    )
    missing = dict(snap)
    missing.pop(next(iter(missing)))
    with pytest.raises(LearnerStateError, match="names differ"):
        a.load_state(missing)
    wrong = dict(snap)
    wrong["transformer.wpe.weight"] = torch.zeros(3, 3)
    with pytest.raises(LearnerStateError, match="shape"):
        a.apply_average("params", wrong)
    nan = dict(snap)
    nan["transformer.wpe.weight"] = torch.full_like(snap["transformer.wpe.weight"], float("nan"))
    with pytest.raises(LearnerStateError, match="non-finite"):
        a.apply_average("grad", nan)
    assert param_digest(a.parameters()) == param_digest(snap)  # rejected input changed nothing


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_learner_returns_cpu_updates_and_matches_cpu() -> None:
    gpu = _sgd(0, device="cuda")
    cpu = _sgd(0)
    assert all(p.device.type == "cuda" for p in gpu.parameters().values())
    rg, rc = gpu.compute_update("grad"), cpu.compute_update("grad")
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in rg.update.values())
    assert abs(rg.loss - rc.loss) < 1e-3
    gpu.apply_average("grad", rc.update)  # CPU tensors in, moved to the device
    cpu.apply_average("grad", rc.update)
    for n, p in gpu.parameters().items():
        torch.testing.assert_close(p.detach().cpu(), cpu.parameters()[n], rtol=1e-3, atol=1e-4)
    rp = gpu.compute_update("params")
    assert all(t.device.type == "cpu" for t in rp.update.values())
    assert gpu.evaluate() == pytest.approx(cpu.evaluate(), abs=0.05)


def test_loading_agreed_moments_reproduces_the_responders_mean_adam_state() -> None:
    """State sync with a real AdamW: two replicas serve their state (their own Adam moments,
    which pass the core's checks, |m| <= 8 sqrt(v) included), a third loads the agreed state
    and then holds exactly their mean moments and step count, and steps from them."""
    cfg = ProtocolConfig(drift_bound=1.0)
    a, b, c = (
        build_learner("tiny-gpt2", "tinytales", 3, i, seed=2, batch_size=4, seq_len=32)
        for i in range(3)
    )
    assert c.moments() is None  # never stepped: nothing to send
    for learner, steps in ((a, 1), (b, 2)):
        for _ in range(steps):
            local_step(learner)
    b.load_state({n: t.detach().clone() for n, t in a.parameters().items()})
    responses = {
        p: LearnerBridge(x, cfg).state_response(ServeState(p, 1), 4)
        for p, x in (("a", a), ("b", b))
    }
    spec = ModelSpec.from_tensors(a.parameters())
    d = decide(responses, spec, 1.0, cfg.sync_moment_bound, cfg.norm_factor)
    assert d is not None and d.moments is not None and d.moments.step == 1  # median (lower)
    LearnerBridge(c, cfg).load(LoadState(4, d.tensors, d.digest, d.outer, d.moments))
    got, ma, mb = c.moments(), a.moments(), b.moments()
    assert got is not None and ma is not None and mb is not None
    for name in a.parameters():
        torch.testing.assert_close(got.exp_avg[name], (ma.exp_avg[name] + mb.exp_avg[name]) / 2)
        torch.testing.assert_close(
            got.exp_avg_sq[name], (ma.exp_avg_sq[name] + mb.exp_avg_sq[name]) / 2
        )
    assert got.step == 1
    local_step(c)  # torch's AdamW steps from the loaded state
    after = c.moments()
    assert after is not None and after.step == 2
    assert all(torch.isfinite(p).all() for p in c.parameters().values())
    assert _sgd(0).moments() is None  # SGD keeps no moments: state sync carries none


def test_label_flip_trains_on_flipped_tokens_and_evaluates_on_true_ones() -> None:
    """The real node's label_flip (node_main: poison_labels(flip_labels)): the same batch
    gives a different gradient (the targets differ); evaluation is untouched."""
    from swarm_tune.runtime.adversary.attacks import flip_labels

    clean, poisoned = _sgd(0), _sgd(0)
    poisoned.poison_labels(flip_labels)
    assert poisoned.evaluate() == clean.evaluate()
    a, b = clean.compute_update("grad"), poisoned.compute_update("grad")
    assert [i.tolist() for i in clean.last_batch_indices] == [
        i.tolist() for i in poisoned.last_batch_indices
    ]  # same data, only the targets differ
    assert any(not torch.equal(a.update[n], b.update[n]) for n in a.update)
