"""``benchmark``: held-out perplexity of real trained checkpoints, reproducible to the bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ops_eval_helpers import STEPS, Trained, meta_path
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.eval.evaluate import benchmark
from swarm_tune.runtime.training.corpus import CORPUS_VALID

MAX_BATCHES = 4


def test_training_lowers_perplexity_and_eval_is_bit_identical(trained: Trained) -> None:
    node = trained.node_dirs[0]
    before = benchmark(meta_path(node, 0), allowed_dir=trained.root, max_batches=MAX_BATCHES)
    after = benchmark(meta_path(node, STEPS), allowed_dir=trained.root, max_batches=MAX_BATCHES)
    again = benchmark(meta_path(node, STEPS), allowed_dir=trained.root, max_batches=MAX_BATCHES)
    print(f"\nppl before {before.perplexity:.3f} after {STEPS} steps {after.perplexity:.3f}")
    assert after.perplexity < before.perplexity
    assert (after.mean_loss, after.perplexity) == (again.mean_loss, again.perplexity)
    assert after.tokens == MAX_BATCHES * 8 * 63 and after.tokens_sha256 == before.tokens_sha256
    # The hashes are of the bytes that were evaluated, recomputed here independently.
    tensor_file = node / json.loads(meta_path(node, STEPS).read_text())["tensor_file"]
    assert after.checkpoint_sha256 == hashlib.sha256(tensor_file.read_bytes()).hexdigest()
    assert after.data_sha256 == hashlib.sha256(CORPUS_VALID.read_bytes()).hexdigest()
    assert (after.run_id, after.round, after.model) == ("demo", STEPS, "tiny-gpt2")


def test_folder_means_latest_and_batching_does_not_change_the_number(trained: Trained) -> None:
    node = trained.node_dirs[1]
    by_dir = benchmark(node, allowed_dir=trained.root, max_batches=2, batch_size=8)
    by_file = benchmark(
        meta_path(node, STEPS), allowed_dir=trained.root, max_batches=4, batch_size=4
    )
    assert by_dir.round == STEPS and by_dir.sequences == by_file.sequences == 16
    # Same 16 rows in different batches: the token-weighted mean agrees to float rounding.
    assert abs(by_dir.mean_loss - by_file.mean_loss) < 1e-5


def test_cli_json_matches_api_and_text_output(trained: Trained, tmp_path: Path) -> None:
    target = meta_path(trained.node_dirs[0], STEPS)
    args = ["benchmark", str(target), "--max-batches", "2", "--allowed-dir", str(trained.root)]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    api = benchmark(target, allowed_dir=trained.root, max_batches=2)
    assert got["mean_loss"] == api.mean_loss and got["perplexity"] == api.perplexity
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0
    assert f"perplexity        {api.perplexity!r}" in text.stdout
    assert api.checkpoint_sha256 in text.stdout and str(api.data_sha256) in text.stdout
