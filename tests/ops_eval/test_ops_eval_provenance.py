"""Code version in run manifests: the commit, and whether the code differed from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from swarm_tune.runtime.ops import provenance
from swarm_tune.runtime.ops.provenance import manifest_code_version


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_manifest_names_the_commit_and_says_when_tracked_code_was_edited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "model.py").write_text("LR = 0.1\n")
    _git(repo, "add", "model.py")
    _git(repo, "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "_REPO_ROOT", repo)
    clean = manifest_code_version()
    assert clean["git_commit"] == _git(repo, "rev-parse", "HEAD")
    assert clean["git_dirty"] is False
    (repo / "model.py").write_text("LR = 0.2\n")  # a result from edited code must say so
    assert manifest_code_version() == {**clean, "git_dirty": True}
    _git(repo, "checkout", "--", "model.py")
    (repo / "notes.txt").write_text("untracked files do not count")
    assert manifest_code_version() == clean


def test_outside_a_checkout_the_commit_is_unknown_not_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provenance, "_REPO_ROOT", tmp_path)
    version = manifest_code_version()
    assert version["git_commit"] is None and version["git_dirty"] is None
    assert version["swarm_tune_version"]
