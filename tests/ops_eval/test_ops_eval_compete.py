"""``compete``: two teams, one result file, and the result re-verified by ``benchmark``."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from ops_eval_helpers import STEPS, Trained, meta_path, tree_digest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.eval.evaluate import benchmark
from swarm_tune.runtime.training.corpus import CORPUS_VALID

MAX_BATCHES = 3


def _manifest(path: Path) -> Path:
    data: dict[str, Any] = {
        "version": 1,
        "run_id": "cup",
        "created": "2026-11-25",
        "model": {"name": "tiny-gpt2"},
        "dataset": {"name": "tinytales"},
        "shards": {"num_shards": 1},
        "hyper": {"learning_rate": 0.003, "batch_size": 8, "rounds": 8},
        "competition": {
            "teams": {"red": [0], "blue": [1]},
            "eval_dataset": {"name": "tinytales", "held_out_split": "validation"},
        },
    }
    path.write_text(json.dumps(data))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_result_names_winner_and_benchmark_reproduces_it(trained: Trained, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "cup.json")
    out = tmp_path / "result.json"
    res = CliRunner().invoke(
        app,
        ["compete", "--team-a", str(trained.red), "--team-b", str(trained.blue)]
        + ["--manifest", str(manifest), "--out", str(out), "--allowed-dir", str(trained.root)]
        + ["--max-batches", str(MAX_BATCHES)],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    red, blue = result["teams"]["red"], result["teams"]["blue"]
    print(
        f"\nred ppl {red['perplexity']:.3f} (round {red['round']}), blue {blue['perplexity']:.3f}"
    )
    expected = "red" if red["mean_loss"] < blue["mean_loss"] else "blue"
    assert result["winner"] == expected and "tie" in result["tie_rule"]
    assert red["round"] == STEPS and blue["round"] == 2
    for team, folder in ((red, trained.red), (blue, trained.blue)):
        (tensor_file,) = folder.glob("*.safetensors")
        assert team["checkpoint_sha256"] == _sha(tensor_file)
    assert result["eval"]["data_sha256"] == _sha(CORPUS_VALID)
    cv = result["code_version"]
    assert cv["swarm_tune"] and (cv["git_commit"] is None or len(cv["git_commit"]) == 40)
    # Independent re-evaluation through the API gives the identical floats.
    for team, folder in ((red, trained.red), (blue, trained.blue)):
        again = benchmark(folder, allowed_dir=trained.root, max_batches=MAX_BATCHES)
        assert (again.mean_loss, again.perplexity) == (team["mean_loss"], team["perplexity"])
    # The recorded command itself, in a fresh process, reproduces the number exactly.
    argv = shlex.split(red["verify_command"])
    assert argv[:2] == ["swarm-tune", "benchmark"]
    exe = Path(sys.executable).with_name("swarm-tune")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    proc = subprocess.run(
        [str(exe), *argv[1:]], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    verified = json.loads(proc.stdout)
    assert verified["mean_loss"] == red["mean_loss"]
    assert verified["perplexity"] == red["perplexity"]
    assert verified["checkpoint_sha256"] == red["checkpoint_sha256"]
    assert verified["tokens_sha256"] == result["eval"]["tokens_sha256"]


def test_equal_checkpoints_tie(trained: Trained, tmp_path: Path) -> None:
    from swarm_tune.runtime.eval.compete import compete

    node = trained.node_dirs[0]
    result = compete(
        meta_path(node, STEPS),
        meta_path(node, STEPS),
        out=tmp_path / "tie.json",
        allowed_dir=trained.root,
        max_batches=1,
    )
    assert result["winner"] is None
    assert result["teams"]["a"]["mean_loss"] == result["teams"]["b"]["mean_loss"]


def test_swapped_teams_are_refused_and_nothing_written(trained: Trained, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "cup.json")
    out = tmp_path / "result.json"
    out.write_text("previous result\n")
    before = tree_digest(trained.root) | {"out": _sha(out)}
    res = CliRunner().invoke(
        app,
        ["compete", "--team-a", str(trained.blue), "--team-b", str(trained.red)]
        + ["--manifest", str(manifest), "--out", str(out), "--allowed-dir", str(trained.root)],
    )
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "cup-blue" in res.stderr and "cup-red" in res.stderr
    assert tree_digest(trained.root) | {"out": _sha(out)} == before
