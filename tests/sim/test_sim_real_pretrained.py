"""``mode: real`` on a user's checkpoint: a local ``save_pretrained`` folder, with and without
LoRA adapters, offline on a folder this test writes.

The same three nodes run twice on the folder. The LoRA run ships only the adapters: the network
model charges the virtual payload times the adapters' share of the model (<= 5% here), which is
what the run manifest records. A LoRA target the model lacks, or a folder that is not there, is
one line from ``sim run``, exit 2, and no run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pretrained import write_pretrained
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.sim import run

VIRTUAL = 1_000_000


def _scenario(model: Path, **learning: Any) -> dict[str, Any]:
    return {
        "name": "real-folder",
        "seed": 3,
        "nodes": {"count": 3},
        "topology": {"kind": "full", "latency_ms": 10},
        "compute": {"classes": [{"step_time": {"dist": "constant", "value": 1.0}}]},
        "learning": {
            "mode": "real",
            "model_name": str(model),
            "data_source": "tinytales",
            "seq_len": 32,
            "batch_size": 4,
            "lr": 0.05,
            "optimizer": "adam",
            "eval_samples": 16,
            "virtual_payload_bytes": VIRTUAL,
            **learning,
        },
        "protocol": {"quorum": 1.0, "min_peers": 2, "round_timeout": 5, "heartbeat_interval": 1},
        "rounds": {"target": 4},
        "outputs": {"eval_every": 2},
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pretrained(tmp_path_factory.mktemp("model") / "base", layers=2)


def test_a_saved_folder_runs_in_real_mode_and_lora_ships_a_sliver(
    base: Path, tmp_path: Path
) -> None:
    full = run(_scenario(base), out=tmp_path / "full")
    lora = run(
        _scenario(base, lora={"rank": 2, "alpha": 4, "target_modules": ["c_attn"]}),
        out=tmp_path / "lora",
    )
    for r in (full, lora):
        losses = r.swarm["eval_loss_median"].dropna()
        assert r.manifest["swarm_round"] >= 4 and len(losses) >= 2
        assert losses.iloc[-1] < losses.iloc[0]
    assert full.manifest["payload_bytes"] == VIRTUAL
    share = lora.manifest["payload_bytes"] / full.manifest["payload_bytes"]
    print(f"LoRA payload / full payload: {share:.2%} (goal <= 5%)")
    assert 0 < share <= 0.05
    assert lora.swarm["bytes"].iloc[-1] < 0.1 * full.swarm["bytes"].iloc[-1]


@pytest.mark.parametrize(
    ("learning", "message"),
    [
        ({"lora": {"target_modules": ["nope"]}}, "learning: LoRA target modules not in the model"),
        ({"model_name": "/nonexistent/model"}, "learning: cannot load tokenizer"),
    ],
)
def test_bad_real_mode_input_is_one_line(
    base: Path, tmp_path: Path, learning: dict[str, Any], message: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_scenario(base, **learning)), encoding="utf-8")
    res = CliRunner().invoke(app, ["sim", "run", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error {message}"), lines
    assert not (tmp_path / "out").exists()


def test_an_unknown_text_column_is_one_line(base: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"body": "a cat sat"}\n' * 8, encoding="utf-8")
    scenario = _scenario(base, data_source=str(docs), text_column="nope")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario), encoding="utf-8")
    res = CliRunner().invoke(app, ["sim", "run", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "has no column 'nope' (columns: body)" in lines[0], lines
    assert not (tmp_path / "out").exists()
