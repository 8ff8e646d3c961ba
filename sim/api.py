"""``swarm_tune.sim.run(...)``: one simulation from a notebook, tables back as DataFrames.

Why the same gate as the CLI: a scenario built as a dict or a ``Scenario`` object skips the
YAML parser, but not the schema or the feasibility check (``scenario_from_data`` /
``checked_feasible``), so what the CLI refuses the API refuses with the same ScenarioError.

Why the run folder is always written and read back: the DataFrames a notebook gets are then
exactly the ones ``swarm-tune report`` and ``analysis.load`` see (one on-disk format, parsed
in one place), and ``.report()`` is the CLI's report of that folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from swarm_tune.analysis.load import OPTIONAL_TABLES, RunData, load_run
from swarm_tune.runtime.resources import shipped_scenarios
from swarm_tune.sim.scenario import (
    Scenario,
    checked_feasible,
    load_scenario,
    scenario_from_data,
)

__all__ = ["ScenarioLike", "SimRun", "resolve_scenario", "run"]

ScenarioLike = str | Path | Mapping[str, Any] | Scenario


@dataclass(frozen=True)
class SimRun(RunData):
    """A finished run: ``path``, ``manifest``, ``config`` and its tables as DataFrames
    (``swarm`` per round of the swarm, ``rounds`` per node and round, ``rejections``,
    ``events``)."""

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"swarm": self.swarm, **{name: getattr(self, name) for name in OPTIONAL_TABLES}}

    def report(
        self,
        out: str | Path | None = None,
        *,
        baseline: Sequence[str | Path] = (),
        title: str = "Swarm-Tune report",
    ) -> Path:
        """Write the HTML report of this run (default: into its folder); returns its path."""
        from swarm_tune.analysis.report import DEFAULT_TARGET_FRACTION, write_report

        runs = [self, *(load_run(b) for b in baseline)]
        target = Path(out) if out is not None else self.path
        return write_report(runs, target, title=title, target_fraction=DEFAULT_TARGET_FRACTION)


def resolve_scenario(scenario: ScenarioLike) -> Scenario:
    """A checked Scenario from a YAML path, a shipped scenario's name, a mapping or a
    Scenario; ScenarioError (a ValueError listing every problem) if it cannot run."""
    if isinstance(scenario, Scenario):
        return checked_feasible(scenario, "<Scenario>")
    if isinstance(scenario, Mapping):
        return scenario_from_data(dict(scenario), "<dict>")
    if isinstance(scenario, str | Path):
        path = Path(scenario)
        shipped = shipped_scenarios()
        if not path.exists() and isinstance(scenario, str) and scenario in shipped:
            path = shipped[scenario]
        return load_scenario(path)
    raise TypeError(
        f"scenario: expected a path, a shipped name, a dict or a Scenario, "
        f"not {type(scenario).__name__}"
    )


def run(
    scenario: ScenarioLike,
    *,
    seed: int | None = None,
    out: str | Path | None = None,
) -> SimRun:
    """Run ``scenario`` (a YAML path, a shipped name such as ``"quickstart"``, a dict or a
    Scenario) with ``seed`` overriding its own; write the run folder to ``out`` (default
    ``runs_out/<name>-s<seed>``, as the CLI) and return it with its tables loaded."""
    from swarm_tune.sim.runner import default_out_dir, run_scenario, with_seed

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed: expected an integer, got {seed!r}")
    sc = with_seed(resolve_scenario(scenario), seed)
    target = Path(out) if out is not None else default_out_dir(sc)
    run_scenario(sc, target)
    data = load_run(target)
    return SimRun(**{f: getattr(data, f) for f in RunData.__dataclass_fields__})
