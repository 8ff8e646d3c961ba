"""The built wheel works on its own: installed into a fresh venv, run from outside the checkout.

Why build and install for real: an editable install and PYTHONPATH=.pkg both see the whole
repository, so a file that the wheel forgets (the corpus, the tokenizer, the scenarios) only
shows up as a crash on a user's machine. Here the wheel is built from a copy of the sources
(nothing is written into the checkout), installed with ``--no-deps`` into a venv made without
pip, and run with PYTHONPATH unset from a folder outside the source tree.

Why the venv borrows the test environment's site-packages through a ``.pth`` line: the
dependencies (torch, libp2p, ...) are already installed, there is no network at test time, and
a path line in a ``.pth`` file adds that folder without processing its own ``.pth`` files, so
the editable install's link to the checkout stays out. The test checks that ``swarm_tune``
and its data come from the fresh venv.

Why its loopback swarm is four nodes in two layer shards: each shard is a two-node swarm,
which is what the wheel has to show, and the same four processes prove the layer shards on the
real runtime (each node averages with its slice mate only; reconstruct assembles the shards)
without paying for a second swarm's start-up.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from procs import REPO, NodeProc, free_port, full_mesh, loopback_env, patience, wait_all_exit
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.ops.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(300))]

# What the build reads: pyproject, the readme, the .pkg links and the folders they point at.
SOURCES = ("pyproject.toml", "README.md", ".pkg", "runtime", "sim", "analysis")
DATA = ("data", "scenarios", "runs")


def _run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=patience(timeout), check=False
    )
    assert res.returncode == 0, f"{argv} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def _copy_sources(dst: Path) -> None:
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in (*SOURCES, *DATA):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, symlinks=True, ignore=skip)
        else:
            shutil.copy2(src, dst / name)


def _fresh_venv(root: Path, wheel: Path) -> Path:
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    purelib = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root
        ).stdout.strip()
    )
    shared = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz-test-deps.pth").write_text("\n".join(shared) + "\n", encoding="utf-8")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        root,
    )
    return venv


def test_wheel_installs_and_runs_quickstart_and_a_loopback_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    src, dist, work = tmp_path / "src", tmp_path / "dist", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    _copy_sources(src)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-q", "-w", str(dist), str(src)],
        tmp_path,
    )
    (wheel,) = dist.glob("swarm_tune-*.whl")
    venv = _fresh_venv(tmp_path, wheel)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "swarm-tune")
    where_from: dict[str, Any] = {"python": python, "cwd": work}

    # The package and its data come from the venv, not from the checkout.
    where = _run(
        [
            python,
            "-c",
            "import json, sys, swarm_tune; from importlib.resources import files; "
            "from swarm_tune.runtime.training.corpus import DATA_DIR, TOKENIZER_PATH; "
            "print(json.dumps([swarm_tune.__file__, str(DATA_DIR), TOKENIZER_PATH.is_file(), "
            "sys.path]))",
        ],
        work,
    )
    module, data_dir, has_tokenizer, path = json.loads(where.stdout)
    assert Path(module).is_relative_to(venv) and Path(data_dir).is_relative_to(venv)
    assert has_tokenizer
    assert str(REPO) not in path and str(REPO / ".pkg") not in path, path

    # Quickstart from the shipped scenario, in a folder of the user's.
    _run([cli, "sim", "init", "quickstart"], work)
    _run([cli, "sim", "run", "quickstart.yaml", "--out", "qs"], work, timeout=240)
    manifest = json.loads((work / "qs" / "manifest.json").read_text("utf-8"))
    assert manifest["stop_reason"] == "target_round" and manifest["swarm_round"] == 40
    assert {p.name for p in (work / "qs").glob("*.parquet")} == {
        "rounds.parquet",
        "swarm.parquet",
        "rejections.parquet",
        "events.parquet",
    }

    # Four real node processes of the installed package on loopback, in two layer shards:
    # each shard is a two-node swarm that averages a round (see _check_layer_shards).
    env = loopback_env(
        SWARM_NUM_SHARDS="4",
        SWARM_MAX_ROUNDS="1",
        SWARM_MODEL_SHARD_TOTAL="2",
        SWARM_ROUND_TIMEOUT_S="60",
        SWARM_EVICTION_TIMEOUT_S="60",
    )
    installed = [
        NodeProc(i, free_port(), work, env | {"SWARM_MODEL_SHARD_INDEX": str(i % 2)}, **where_from)
        for i in range(4)
    ]
    with full_mesh(installed) as nodes:
        wait_all_exit(nodes, timeout=240)
    _check_layer_shards(nodes, work)


def _check_layer_shards(nodes: Sequence[NodeProc], work: Path) -> None:
    """Nodes 0, 2 train slice 0 of tiny-gpt2 and 1, 3 slice 1; each was given all three others
    as bootstrap peers, the worst case for the separation (it dials the other slice too, whose
    frames are refused as another run's). A node admits and sends its update to its slice mate
    only, the round it commits averages two contributions, and the mates end bit-identical.
    The slices' checkpoints are disjoint; ``checkpoint reconstruct`` refuses one alone,
    ``benchmark`` refuses a single slice, and the assembled model is both, bit for bit."""
    tensors: list[dict[str, torch.Tensor]] = []
    for node in nodes:
        mate = nodes[(node.index + 2) % 4]
        joined = {r["peer"] for r in node.events("peer.joined")}
        sent_to = {r["peer"] for r in node.events("bulk.sent") if r["message"] == "Contribution"}
        assert joined <= {mate.peer_id} and sent_to == {mate.peer_id}, (node.name, joined, sent_to)
        committed = node.committed()
        assert committed and all(r["contributors"] == 2 for r in committed), node.tail()
        info = latest_checkpoint(node.ckpt_dir)
        assert info is not None, node.tail()
        tensors.append(load_checkpoint(info, allowed_dir=work)[0])
    for k in (0, 1):  # slice mates applied the same averages: one replica per slice
        assert tensors[k].keys() == tensors[k + 2].keys()
        assert all(torch.equal(tensors[k][n], tensors[k + 2][n]) for n in tensors[k])
    assert not tensors[0].keys() & tensors[1].keys()

    argv = ["checkpoint", "reconstruct", "--model", "tiny-gpt2", "--allowed-dir", str(work)]
    out = work / "model"
    alone = CliRunner().invoke(app, [*argv, str(nodes[1].ckpt_dir), "--out", str(out)])
    assert alone.exit_code == 2 and "layer shards [0] of 2 are missing" in alone.output
    assert not out.exists()
    one = CliRunner().invoke(app, ["benchmark", str(nodes[1].ckpt_dir), "--allowed-dir", str(work)])
    assert one.exit_code == 2 and "holds layer shard 1 of 2 only" in one.output, one.output
    both = [str(nodes[k].ckpt_dir) for k in (0, 1)]
    res = CliRunner().invoke(app, [*argv, *both, "--out", str(out)])
    assert res.exit_code == 0, res.output
    from transformers import AutoModelForCausalLM

    rebuilt: Any = AutoModelForCausalLM.from_pretrained(str(out))
    got = {n: p.detach() for n, p in rebuilt.named_parameters()}
    assert got.keys() == tensors[0].keys() | tensors[1].keys()
    for k in (0, 1):
        assert all(torch.equal(got[n], t) for n, t in tensors[k].items())
