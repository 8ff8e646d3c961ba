"""Any local ``save_pretrained`` folder is a base model: it trains, averages, checkpoints,
reconstructs and benchmarks, offline, on a folder this test writes.

Why the identity is the folder's config.json hash (ops/checkpoint.py): a path is not a model.
The same folder copied elsewhere is the same base; another config at any path is not, and a
checkpoint of it is refused in one line (exit 2) with nothing written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from pretrained import write_pretrained
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.ops.checkpoint import BASE_CONFIG_KEY, latest_checkpoint, save_checkpoint
from swarm_tune.runtime.training import build_learner


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_pretrained(tmp_path / "base", layers=2)


def test_a_saved_folder_trains_averages_checkpoints_reconstructs_and_benchmarks(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    learners = [
        build_learner(str(base), "tinytales", 2, i, seq_len=32, batch_size=4, lr=0.01)
        for i in range(2)
    ]
    start = {n: t.clone() for n, t in learners[0].parameters().items()}
    loss0 = learners[0].evaluate()
    for _ in range(3):  # three averaged gradient rounds
        updates = [lr.compute_update("grad").update for lr in learners]
        mean = {n: (updates[0][n] + updates[1][n]) / 2 for n in updates[0]}
        for lr in learners:
            lr.apply_average("grad", mean)
    params = [lr.parameters() for lr in learners]
    assert all(torch.equal(params[0][n], params[1][n]) for n in params[0])  # replicas agree
    assert any(not torch.equal(start[n], params[0][n]) for n in start)
    assert learners[0].evaluate() < loss0

    ckpt_dir = tmp_path / "ckpt"
    save_checkpoint(ckpt_dir, "pre", 3, params[0], str(base))
    info = latest_checkpoint(ckpt_dir, "pre")
    assert info is not None
    runner = CliRunner()
    res = runner.invoke(
        app, ["checkpoint", "reconstruct", "ckpt", "--model", str(base), "--out", "merged"]
    )
    assert res.exit_code == 0, res.output
    from transformers import AutoModelForCausalLM

    merged: Any = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    got = dict(merged.named_parameters())
    assert all(torch.equal(got[n].detach(), params[0][n]) for n in params[0])
    res = runner.invoke(app, ["benchmark", "ckpt", "--max-batches", "2", "--seq-len", "32"])
    assert res.exit_code == 0, res.output

    # The same base copied elsewhere is the same model; another config is not.
    moved = shutil.copytree(base, tmp_path / "moved")
    res = runner.invoke(
        app, ["checkpoint", "reconstruct", "ckpt", "--model", str(moved), "--out", "m2"]
    )
    assert res.exit_code == 0, res.output
    other = write_pretrained(tmp_path / "other", layers=1)
    for args in (
        ["checkpoint", "reconstruct", "ckpt", "--model", str(other), "--out", "m3"],
        ["benchmark", "ckpt", "--model", str(other)],
    ):
        res = runner.invoke(app, args)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1, res.output
        assert "different base model" in lines[0], lines
    assert not (tmp_path / "m3").exists()

    # compete pins one base model by its config hash too: a moved folder is the same base.
    save_checkpoint(tmp_path / "ckpt-moved", "pre", 3, start, str(moved))
    save_checkpoint(tmp_path / "ckpt-other", "pre", 3, start, str(other))
    compete = ["compete", "--team-a", "ckpt", "--max-batches", "1", "--seq-len", "32"]
    res = runner.invoke(app, [*compete, "--team-b", "ckpt-moved", "--out", "r.json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*compete, "--team-b", "ckpt-other", "--out", "r2.json"])
    assert res.exit_code == 2 and "different models" in res.output, res.output
    assert not (tmp_path / "r2.json").exists()


def test_checkpoints_of_a_folder_record_its_config_hash(base: Path, tmp_path: Path) -> None:
    import hashlib

    save_checkpoint(tmp_path / "c", "r", 0, {"w": torch.zeros(2)}, str(base))
    info = latest_checkpoint(tmp_path / "c", "r")
    assert info is not None
    from swarm_tune.runtime.ops.checkpoint import load_checkpoint

    _, meta = load_checkpoint(info, allowed_dir=tmp_path, expected_model=str(base))
    want = hashlib.sha256((base / "config.json").read_bytes()).hexdigest()
    assert meta.extra[BASE_CONFIG_KEY] == want
