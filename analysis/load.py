"""Run folders into pandas: one place that knows the on-disk format of a run.

Why a loader separate from the report: sweeps, the CI regression and notebooks all want "the
tables of these runs" without plotting anything, and the format (written by
``sim/recorder.py``; the centralized baseline writes the same names) should be parsed in one
place so a change to it breaks one module, not five.

Why tolerant: a run folder is self-describing, but not every producer writes every table (the
centralized baseline has no network, so no ``rounds``/``events``). A missing OPTIONAL table
becomes an empty frame with no rows; a folder without ``manifest.json`` + ``swarm.parquet`` is
not a run at all and raises ``NotARunError`` naming the folder and what is missing, because
"KeyError: 'round'" three calls later is not an error message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

REQUIRED_FILES = ("manifest.json", "swarm.parquet")
OPTIONAL_TABLES = ("rounds", "rejections", "events")
BASELINE_KIND = "centralized_baseline"


class NotARunError(ValueError):
    """The folder is not a run folder (or its files cannot be read)."""


@dataclass(frozen=True)
class RunData:
    """One run: its resolved scenario, manifest and tables (empty frame when absent)."""

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    swarm: pd.DataFrame
    rounds: pd.DataFrame = field(default_factory=pd.DataFrame)
    rejections: pd.DataFrame = field(default_factory=pd.DataFrame)
    events: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def is_baseline(self) -> bool:
        return self.manifest.get("kind") == BASELINE_KIND

    @property
    def label(self) -> str:
        """The configuration this run stands for (sweep point without seed, else run id)."""
        point = self.manifest.get("sweep_point")
        if isinstance(point, dict) and point:
            return ", ".join(f"{k}={v}" for k, v in sorted(point.items()))
        return self.run_id

    def learning(self) -> dict[str, Any]:
        value = self.config.get("learning")
        return value if isinstance(value, dict) else {}


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise NotARunError(f"{path}: not a readable parquet table ({exc})") from None


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES)


def load_run(path: str | Path) -> RunData:
    """Load one run folder; raise ``NotARunError`` if it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise NotARunError(f"{p}: no such folder")
    missing = [f for f in REQUIRED_FILES if not (p / f).is_file()]
    if missing:
        raise NotARunError(f"{p}: not a run folder (missing {', '.join(missing)})")
    try:
        manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise NotARunError(f"{p}/manifest.json: unreadable ({exc})") from None
    if not isinstance(manifest, dict):
        raise NotARunError(f"{p}/manifest.json: expected a JSON object")
    config: dict[str, Any] = {}
    if (p / "config.yaml").is_file():
        try:
            loaded = yaml.safe_load((p / "config.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise NotARunError(f"{p}/config.yaml: not valid YAML ({exc})") from None
        config = loaded if isinstance(loaded, dict) else {}
    tables = {
        name: _read_table(p / f"{name}.parquet")
        for name in OPTIONAL_TABLES
        if (p / f"{name}.parquet").is_file()
    }
    return RunData(
        path=p,
        manifest=manifest,
        config=config,
        swarm=_read_table(p / "swarm.parquet"),
        rounds=tables.get("rounds", pd.DataFrame()),
        rejections=tables.get("rejections", pd.DataFrame()),
        events=tables.get("events", pd.DataFrame()),
    )


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
            # Let load_run produce the precise message (missing folder / missing files).
            out.append(p)
        out.extend(found)
    return out


def load_runs(paths: Sequence[str | Path]) -> list[RunData]:
    """Load run folders (or folders containing runs, e.g. a sweep's output)."""
    return [load_run(p) for p in find_runs(paths)]
