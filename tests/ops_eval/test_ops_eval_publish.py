"""``checkpoint publish``: offline. The dry run stages exactly the upload; no token, no upload."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from ops_eval_helpers import STEPS, Trained, tree_digest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.eval.reconstruct import reconstruct


@pytest.fixture(scope="module")
def model_dir(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("publish") / "model"
    reconstruct(list(trained.node_dirs), model="tiny-gpt2", out_dir=out, allowed_dir=trained.root)
    return out


def test_dry_run_stages_exactly_what_would_be_uploaded(model_dir: Path, tmp_path: Path) -> None:
    before = tree_digest(model_dir)
    staging = tmp_path / "stage"
    res = CliRunner().invoke(
        app,
        ["checkpoint", "publish", str(model_dir), "--repo-id", "swarm-org/tiny-demo"]
        + ["--dry-run", "--staging-dir", str(staging)],
    )
    assert res.exit_code == 0, res.output
    assert tree_digest(model_dir) == before  # the source folder is never modified
    manifest = json.loads((staging / "upload-manifest.json").read_text())
    assert manifest["repo_id"] == "swarm-org/tiny-demo" and manifest["repo_type"] == "model"
    upload = staging / "upload"
    on_disk = {
        p.relative_to(upload).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in upload.rglob("*")
        if p.is_file()
    }
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == on_disk
    # Every model file is staged byte for byte, plus the generated card.
    for rel, digest in before.items():
        assert on_disk[rel] == digest
    assert set(on_disk) - set(before) == {"README.md"}
    card = (upload / "README.md").read_text()
    prov = json.loads((model_dir / "swarm_tune.json").read_text())
    for fact in ("`demo`", f"`{STEPS}`", "`demo-n0`", "`demo-n1`", "`tinytales`"):
        assert fact in card, fact
    assert prov["param_digest"] in card and prov["code_version"]["swarm_tune"] in card


def test_real_upload_without_token_fails_before_any_network(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HF_TOKEN", "SWARM_HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached login either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(
        app, ["checkpoint", "publish", str(model_dir), "--repo-id", "swarm-org/tiny-demo"]
    )
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: no Hugging Face token") and res.stderr.count("\n") == 1


@pytest.mark.parametrize("repo_id", ["no-slash", "a/b/c", "../etc", "org/name with space"])
def test_bad_repo_id_is_refused(model_dir: Path, tmp_path: Path, repo_id: str) -> None:
    res = CliRunner().invoke(
        app,
        ["checkpoint", "publish", str(model_dir), "--repo-id", repo_id, "--dry-run"]
        + ["--staging-dir", str(tmp_path / "stage")],
    )
    assert res.exit_code == 2 and "ORG/NAME" in res.stderr
    assert not (tmp_path / "stage").exists()
