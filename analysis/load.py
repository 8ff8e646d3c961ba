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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from swarm_tune.analysis.run_dirs import (
    BASELINE_KIND,
    NotARunError,
    check_run_dir,
)

OPTIONAL_TABLES = ("rounds", "rejections", "events")


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


def load_run(path: str | Path) -> RunData:
    """Load one run folder; raise ``NotARunError`` if it is not one."""
    p = Path(path)
    check_run_dir(p)
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
