"""LoRA adapters (runtime/training/lora.py): only the adapters train and travel.

Three learners on three shards of the shipped corpus exchange their updates as the protocol
would (the weighted mean of equal shards); what they exchange is <= 5% of the full model's
bytes, the held-out loss falls, and the merged model is, in closed form, the base plus
scale * B_avg @ A_avg on every adapted module. A target module the model lacks is one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import trio
from pydantic import ValidationError
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.eval.evaluate import build_model
from swarm_tune.runtime.net.node_main import run_node
from swarm_tune.runtime.ops.checkpoint import save_checkpoint
from swarm_tune.runtime.ops.manifest import RunManifest
from swarm_tune.runtime.ops.settings import load_settings
from swarm_tune.runtime.training import build_learner
from swarm_tune.runtime.training.lora import LORA_KEY, LoraError, LoraSpec, apply_lora, merge
from swarm_tune.runtime.training.models import load_model

SPEC = LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))


def _bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_three_learners_exchange_adapters_only_and_merge_in_closed_form(tmp_path: Path) -> None:
    learners = [
        build_learner("tiny-llama", "tinytales", 3, i, seq_len=32, batch_size=8, lr=0.05, lora=SPEC)
        for i in range(3)
    ]
    base, _, _ = build_model("tiny-llama", None, seed=0)  # the learners' base (seed 0)
    full = _bytes({n: p.detach() for n, p in base.named_parameters()})
    sent = _bytes(learners[0].parameters())
    assert all(".lora_A." in n or ".lora_B." in n for n in learners[0].parameters())
    print(f"bytes per contribution: LoRA {sent:,} vs full {full:,} = {sent / full:.2%}")
    assert sent <= 0.05 * full
    before = learners[0].evaluate()
    for _ in range(6):
        updates = [lr.compute_update("grad").update for lr in learners]
        mean = {n: sum(u[n] for u in updates) / 3 for n in updates[0]}
        for lr in learners:
            lr.apply_average("grad", mean)
    after = learners[0].evaluate()
    print(f"held-out loss {before:.4f} -> {after:.4f}")
    assert after < before
    adapters = {n: t.detach().clone() for n, t in learners[0].parameters().items()}
    for other in learners[1:]:  # replicas that applied the same averages agree
        assert all(torch.equal(adapters[n], t) for n, t in other.parameters().items())

    # Closed form: W_merged = W_base + (alpha / r) * B @ A for every adapted module.
    reference = {n: p.detach().clone() for n, p in base.named_parameters()}
    merged = dict(merge(base, SPEC, adapters).named_parameters())
    adapted = 0
    for name, w in reference.items():
        module = name.removesuffix(".weight")
        key = f"base_model.model.{module}.lora_%s.default.weight"
        if key % "A" in adapters:
            want = w + SPEC.scale * adapters[key % "B"] @ adapters[key % "A"]
            torch.testing.assert_close(merged[name].detach(), want, rtol=1e-5, atol=1e-6)
            adapted += 1
        else:
            assert torch.equal(merged[name].detach(), w), name  # untouched elsewhere
    assert adapted == 4  # q_proj and v_proj in both layers

    # Adapter checkpoints carry their spec; reconstruct merges them into the same model.
    extra = {LORA_KEY: SPEC.record(0)}
    save_checkpoint(tmp_path / "ckpt", "lora", 6, adapters, "tiny-llama", extra)
    res = CliRunner().invoke(
        app,
        ["checkpoint", "reconstruct", str(tmp_path / "ckpt"), "--model", "tiny-llama"]
        + ["--out", str(tmp_path / "merged"), "--allowed-dir", str(tmp_path)],
    )
    assert res.exit_code == 0, res.output
    from transformers import AutoModelForCausalLM

    rebuilt: Any = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    for name, t in rebuilt.named_parameters():
        assert torch.equal(t.detach(), merged[name].detach()), name

    # benchmark (and so compete) reads an adapter checkpoint as its merged model.
    scores = []
    for ckpt in (tmp_path / "ckpt", tmp_path / "merged"):
        argv = ["benchmark", str(ckpt), "--max-batches", "2", "--json"]
        res = CliRunner().invoke(app, [*argv, "--allowed-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
        scores.append(json.loads(res.stdout)["mean_loss"])
    assert scores[0] == pytest.approx(scores[1], rel=1e-6)


def test_a_missing_target_module_is_a_typed_error() -> None:
    model = load_model("tiny-gpt2", vocab_size=1024, eos_token_id=0)
    with pytest.raises(
        LoraError, match=r"not in the model: 'q_proj', 'v_proj' \(its linear layers: c_attn"
    ):
        apply_lora(model, SPEC)
    with pytest.raises(LoraError, match="rank"):
        LoraSpec(rank=0)


def test_node_refuses_a_missing_target_module_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The node's own entry, in this process: the refusal comes before any port or file.
    settings = load_settings(
        run_id="bad-lora",
        model_name="tiny-gpt2",
        peft="lora",
        lora_target_modules="q_proj,nope",
        checkpoint_dir=tmp_path / "ckpt",
        node_key_file=tmp_path / "key",
    )
    assert trio.run(run_node, settings) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    want = (
        "error: SWARM_LORA_TARGET_MODULES: LoRA target modules not in the model: 'q_proj', 'nope'"
    )
    assert len(lines) == 1 and lines[0].startswith(want), lines
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_manifest_publishes_the_lora_spec_to_every_node() -> None:
    data: dict[str, Any] = {
        "run_id": "lora-run",
        "created": "2026-12-01",
        "model": {"name": "tiny-llama", "lora": {"rank": 4, "alpha": 8}},
        "dataset": {"name": "tinytales"},
        "shards": {"num_shards": 2},
        "hyper": {"learning_rate": 0.05, "batch_size": 4, "rounds": 3},
    }
    manifest = RunManifest.model_validate(data)
    for i in range(2):
        settings = load_settings(**manifest.node_env(i))
        assert settings.lora() == LoraSpec(4, 8, LoraSpec().target_modules)
    data["model"]["lora"] = {"rank": 0}
    with pytest.raises(ValidationError, match="rank"):
        RunManifest.model_validate(data)
