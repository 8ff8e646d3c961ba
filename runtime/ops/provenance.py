"""Where a number came from: code version and content hashes for results others must verify.

Why content hashes and not paths or timestamps: a benchmark or competition result is only
worth something if a third party can re-run it and get the same number. Paths differ between
machines and timestamps differ between runs, so what we record is what determines the number:
the SHA-256 of the checkpoint file that was evaluated, of the evaluation text, of the exact
token tensor fed to the model (catches a different tokenizer), and the code version.

Why the git commit is optional: a wheel install has no ``.git``; the package version is then
the best we can say, and we say ``None`` for the commit rather than guessing.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import torch

import swarm_tune

__all__ = [
    "code_version",
    "manifest_code_version",
    "sha256_bytes",
    "sha256_file",
    "sha256_tensor",
    "sha256_text_source",
]

_CHUNK = 1 << 20
_REPO_ROOT = Path(__file__).resolve().parents[2]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_text_source(path: Path) -> str:
    """A file's SHA-256; for a folder, a hash over its ``*.txt`` files (relative name and
    content hash, sorted), the same files and order the data loader reads."""
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(path.rglob("*.txt")):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def sha256_tensor(t: torch.Tensor) -> str:
    """Hash of dtype, shape and raw bytes: equal exactly when the tensors are equal."""
    c = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{c.dtype}{list(c.shape)}".encode())
    h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _git_commit() -> tuple[str | None, bool | None]:
    if not (_REPO_ROOT / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        # Tracked-file changes only: a result from edited code must say so.
        dirty = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (commit or None), bool(dirty)


def code_version() -> dict[str, Any]:
    """``{"swarm_tune": version, "git_commit": sha or None, "git_dirty": bool or None,
    "torch": version}``."""
    commit, dirty = _git_commit()
    return {
        "swarm_tune": swarm_tune.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch": torch.__version__,
    }


def manifest_code_version() -> dict[str, Any]:
    """The code-version fields of a run folder's manifest.json (simulation runs, baselines)."""
    cv = code_version()
    return {
        "swarm_tune_version": cv["swarm_tune"],
        "git_commit": cv["git_commit"],
        "git_dirty": cv["git_dirty"],
    }
