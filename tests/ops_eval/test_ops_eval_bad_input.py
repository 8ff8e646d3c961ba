"""Bad input to every command: exit code 2, one line on stderr, no traceback, no file touched."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from ops_eval_helpers import STEPS, Trained, meta_path, tree_digest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app

Case = Callable[[Trained, Path], list[str]]


def _truncated(trained: Trained, tmp_path: Path) -> Path:
    """A copy of a real checkpoint whose tensor file lost its second half."""
    broken = tmp_path / "broken"
    broken.mkdir()
    src = meta_path(trained.node_dirs[0], STEPS)
    tensor_name = json.loads(src.read_text())["tensor_file"]
    shutil.copy2(src, broken / src.name)
    data = (src.parent / tensor_name).read_bytes()
    (broken / tensor_name).write_bytes(data[: len(data) // 2])
    return broken / src.name


def _outside_link(trained: Trained, tmp_path: Path) -> Path:
    """A symlink inside the allowed folder that points at a checkpoint outside it."""
    inside = tmp_path / "allowed"
    inside.mkdir()
    link = inside / "ckpt-000000008.json"
    link.symlink_to(meta_path(trained.node_dirs[0], STEPS))
    return link


def _ckpt(t: Trained, node: int = 0) -> str:
    return str(meta_path(t.node_dirs[node], STEPS))


CASES: dict[str, tuple[Case, str]] = {
    "reconstruct-mixed-runs": (
        lambda t, p: (
            ["checkpoint", "reconstruct", _ckpt(t), str(t.red), "--model", "tiny-gpt2"]
            + ["--out", str(t.root / "never"), "--allowed-dir", str(t.root)]
        ),
        "from run 'cup-red', not 'demo'",
    ),
    "reconstruct-other-model": (
        lambda t, p: (
            ["checkpoint", "reconstruct", _ckpt(t), "--model", "tiny-llama"]
            + ["--out", str(t.root / "never"), "--allowed-dir", str(t.root)]
        ),
        "for model 'tiny-gpt2', not 'tiny-llama'",
    ),
    "reconstruct-truncated": (
        lambda t, p: (
            ["checkpoint", "reconstruct", _ckpt(t), str(_truncated(t, p))]
            + ["--model", "tiny-gpt2", "--out", str(p / "never"), "--allowed-dir", "/"]
        ),
        "bytes on disk, manifest says",
    ),
    "reconstruct-out-not-empty": (
        lambda t, p: (
            ["checkpoint", "reconstruct", _ckpt(t), "--model", "tiny-gpt2"]
            + ["--out", str(t.node_dirs[1]), "--allowed-dir", str(t.root)]
        ),
        "exists and is not empty",
    ),
    "benchmark-other-model": (
        lambda t, p: ["benchmark", _ckpt(t), "--model", "tiny-llama", "--allowed-dir", str(t.root)],
        "not 'tiny-llama'",
    ),
    "benchmark-other-run": (
        lambda t, p: ["benchmark", str(t.red), "--run-id", "demo", "--allowed-dir", str(t.root)],
        "from run 'cup-red', not 'demo'",
    ),
    "benchmark-truncated": (
        lambda t, p: ["benchmark", str(_truncated(t, p)), "--allowed-dir", str(p)],
        "bytes on disk, manifest says",
    ),
    "benchmark-outside-allowed": (
        lambda t, p: ["benchmark", _ckpt(t), "--allowed-dir", str(t.node_dirs[1])],
        "pass --allowed-dir FOLDER",
    ),
    "benchmark-symlink-escape": (
        lambda t, p: ["benchmark", str(_outside_link(t, p)), "--allowed-dir", str(p / "allowed")],
        "outside",
    ),
    "compete-truncated": (
        lambda t, p: (
            ["compete", "--team-a", _ckpt(t), "--team-b", str(_truncated(t, p))]
            + ["--out", str(p / "result.json"), "--allowed-dir", "/"]
        ),
        "bytes on disk, manifest says",
    ),
    "compete-outside-allowed": (
        lambda t, p: (
            ["compete", "--team-a", _ckpt(t, 1), "--team-b", _ckpt(t, 0)]
            + ["--out", str(p / "result.json"), "--allowed-dir", str(t.node_dirs[1])]
        ),
        "pass --allowed-dir FOLDER",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    name: str, trained: Trained, tmp_path: Path
) -> None:
    build, expected = CASES[name]
    args = build(trained, tmp_path)
    before = (tree_digest(trained.root), tree_digest(tmp_path))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert expected in res.stderr, res.stderr
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert (tree_digest(trained.root), tree_digest(tmp_path)) == before
