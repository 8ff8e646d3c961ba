"""Expanding a scenario's ``sweep:`` block into the concrete scenarios of a sweep.

The block (validated here, since the scenario schema only accepts it as a dict)::

    sweep:
      grid:                      # dotted path into the scenario -> values to try
        churn.fraction: [0.0, 0.2, 0.4]
        protocol.strategy: [flat, gossip]
        adversaries.0.count: [0, 1]   # list items by index
      seeds: [1, 2, 3]           # default: the scenario's own seed

Why dotted paths over the resolved scenario: any field can be swept without the sweep runner
knowing the schema, and every point is re-validated by the same ``parse_scenario`` a single
run uses — an infeasible combination is reported with its point name before anything runs.

Why a point's folder name is made of its parameters (not its index): resumability. A re-run
with one more value in the grid finds the already-finished points under the same names.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import yaml

from swarm_tune.sim.scenario import Scenario, ScenarioError, parse_scenario

_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


class SweepError(ValueError):
    """A ``sweep:`` block that cannot be expanded."""


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One run of a sweep: its parameters (without seed), seed and resolved scenario."""

    params: dict[str, Any]
    seed: int
    scenario: Scenario

    @property
    def config_id(self) -> str:
        if not self.params:
            return "base"
        return _SAFE.sub("_", ",".join(f"{k}={_fmt(v)}" for k, v in self.params.items()))

    @property
    def point_id(self) -> str:
        return f"{self.config_id},seed={self.seed}"


def _fmt(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _set_path(data: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, dict):
            if part not in node:
                raise SweepError(f"sweep.grid: {path!r}: no field {part!r} in the scenario")
            if last:
                node[part] = value
            else:
                node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SweepError(f"sweep.grid: {path!r}: {part!r} is not an index of the list")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            raise SweepError(f"sweep.grid: {path!r}: cannot descend into a value at {part!r}")


def _parse_block(
    block: dict[str, Any], default_seed: int
) -> tuple[dict[str, list[Any]], list[int]]:
    unknown = set(block) - {"grid", "seeds"}
    if unknown:
        raise SweepError(f"sweep: unknown keys {sorted(unknown)} (expected grid, seeds)")
    grid = block.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError("sweep.grid must be a mapping of dotted path -> list of values")
    for path, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"sweep.grid: {path!r} needs a non-empty list of values")
        if path in ("seed", "sweep") or path.startswith("sweep."):
            raise SweepError(f"sweep.grid: {path!r} cannot be swept (use sweep.seeds)")
    seeds = block.get("seeds", [default_seed])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise SweepError("sweep.seeds must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise SweepError("sweep.seeds has duplicates")
    return {str(k): list(v) for k, v in grid.items()}, list(seeds)


def expand(scenario: Scenario, source: str = "<scenario>") -> list[SweepPoint]:
    """Every point of the scenario's sweep (one point, the scenario itself, if it has none)."""
    grid, seeds = _parse_block(scenario.sweep or {}, scenario.seed)
    base = yaml.safe_load(scenario.resolved_yaml())
    base["sweep"] = None
    points: list[SweepPoint] = []
    problems: list[str] = []
    paths = list(grid)
    for combo in itertools.product(*(grid[p] for p in paths)):
        params = dict(zip(paths, combo, strict=True))
        for seed in seeds:
            data = yaml.safe_load(yaml.safe_dump(base))
            for path, value in params.items():
                _set_path(data, path, value)
            data["seed"] = seed
            name = ",".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "base"
            try:
                sc = parse_scenario(yaml.safe_dump(data, sort_keys=False), f"{source} [{name}]")
            except ScenarioError as exc:
                problems.append(str(exc))
                continue
            points.append(SweepPoint(params, seed, sc))
    if problems:
        raise SweepError("infeasible sweep points:\n" + "\n".join(dict.fromkeys(problems)))
    return points
