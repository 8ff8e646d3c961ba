"""``checkpoint reconstruct``: node checkpoints -> a folder transformers loads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from ops_eval_helpers import STEPS, Trained, meta_path
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.eval.evaluate import benchmark
from swarm_tune.runtime.ops.checkpoint import param_digest
from swarm_tune.runtime.training import load_tokenizer


def _load(out: Path) -> Any:
    from transformers import AutoModelForCausalLM

    auto: Any = AutoModelForCausalLM
    return auto.from_pretrained(str(out))


def test_average_round_trips_and_equals_closed_form(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    res = CliRunner().invoke(
        app,
        ["checkpoint", "reconstruct", *map(str, trained.node_dirs), "--model", "tiny-gpt2"]
        + ["--out", str(out), "--allowed-dir", str(trained.root)],
    )
    assert res.exit_code == 0, res.output
    model = _load(out)
    a, b = trained.final
    loaded = dict(model.named_parameters())
    assert loaded.keys() == a.keys()
    for name in a:
        closed = ((a[name].double() + b[name].double()) / 2).float()
        assert torch.equal(loaded[name].detach(), closed), name
    assert sum(not torch.equal(a[n], b[n]) for n in a) == len(a)  # really two replicas
    # Tied output layer follows the averaged embedding.
    assert torch.equal(model.lm_head.weight, loaded["transformer.wte.weight"])
    prov = json.loads((out / "swarm_tune.json").read_text())
    assert prov["run_id"] == "demo" and prov["rounds"] == [STEPS]
    assert prov["contributors"] == ["demo-n0", "demo-n1"] and prov["datasets"] == ["tinytales"]
    assert prov["param_digest"] == param_digest({n: p.detach() for n, p in loaded.items()})
    # Tokenizer files travel with the weights and encode exactly like the shipped tokenizer.
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(str(out))
    text = "Once upon a time, a shy duck named Lucy."
    assert tok.encode(text, add_special_tokens=False) == load_tokenizer().encode(text)


def test_latest_mode_takes_newest_round_and_benchmarks_the_same(
    trained: Trained, tmp_path: Path
) -> None:
    from swarm_tune.runtime.eval.reconstruct import reconstruct

    node = trained.node_dirs[0]
    out = tmp_path / "latest"
    reconstruct(
        [meta_path(node, 0), meta_path(node, STEPS)],
        model="tiny-gpt2",
        out_dir=out,
        allowed_dir=trained.root,
        mode="latest",
    )
    loaded = dict(_load(out).named_parameters())
    for name, t in trained.final[0].items():
        assert torch.equal(loaded[name].detach(), t), name
    # The exported folder evaluates to the very same number as the checkpoint it came from.
    via_folder = benchmark(out, allowed_dir=tmp_path, max_batches=2)
    via_ckpt = benchmark(meta_path(node, STEPS), allowed_dir=trained.root, max_batches=2)
    assert via_folder.mean_loss == via_ckpt.mean_loss
    assert via_folder.tokens_sha256 == via_ckpt.tokens_sha256
