"""Helpers shared by the ops_eval tests (unique module name: tests run in rootdir mode)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

STEPS = 8
RUN = "demo"


@dataclass(frozen=True)
class Trained:
    root: Path  # the allowed directory for every test
    node_dirs: tuple[Path, Path]  # run "demo": round 0 (init) and round STEPS each
    init: dict[str, torch.Tensor]
    final: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
    red: Path  # run "cup-red": node 0 after STEPS steps
    blue: Path  # run "cup-blue": node 1 after 2 steps


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and every folder, as 'dir') under ``root``."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def meta_path(directory: Path, round_: int) -> Path:
    return directory / f"ckpt-{round_:09d}.json"
