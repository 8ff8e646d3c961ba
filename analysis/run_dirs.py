"""Which folders are run folders: pathlib only, so a bad path is refused before pandas loads.

A run folder holds at least ``manifest.json`` and ``swarm.parquet`` (``sim/recorder.py`` and
the centralized baseline write them); ``load.py`` reads the tables, this module only finds
and checks the folders, with the message a person needs ("no such folder", "missing
manifest.json").
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

REQUIRED_FILES = ("manifest.json", "swarm.parquet")
BASELINE_KIND = "centralized_baseline"


class NotARunError(ValueError):
    """The folder is not a run folder (or its files cannot be read)."""


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES)


def check_run_dir(path: Path) -> None:
    """Raise ``NotARunError`` saying what is wrong, unless ``path`` is a run folder."""
    if not path.is_dir():
        raise NotARunError(f"{path}: no such folder")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise NotARunError(f"{path}: not a run folder (missing {', '.join(missing)})")


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Expand each path: a run folder itself, or every run folder below it (sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if is_run_dir(p):
            out.append(p)
            continue
        found = sorted(m.parent for m in p.rglob("manifest.json") if is_run_dir(m.parent))
        if not found:
            # Let check_run_dir produce the precise message (missing folder / missing files).
            out.append(p)
        out.extend(found)
    return out
