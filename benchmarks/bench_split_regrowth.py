"""After a healed split, how fast does replica divergence grow back, and why?

Issue 15 (item 6) saw divergence re-grow ~3x faster after a healed split than before the cut,
until the next parameter round. Question: should state sync carry optimizer state?

The experiment (scenarios/split-heal.yaml): 12 nodes, flat, a scripted 10-round partition into
two halves (eviction timeout long, so the halves talk again at the heal: this needs no
redial), non-IID shards, parameter averaging every 10 rounds. Divergence (true mean relative
L2 distance, eval every round) grows at some rate per gradient round before the cut; after
the heal the replicas are re-aligned by state sync (their drift is past drift_bound), and the
rate at which they drift apart again is compared with the rate before the cut, for:

* Adam, state sync carrying parameters only (``sync_moment_bound: 0``: each node keeps its
  own Adam moments);
* Adam, state sync carrying the moments (the default: the loader takes the agreeing
  responders' mean m and v and their median step count, runtime/protocol/moments.py);
* SGD (no optimizer state: the control).

Why: two halves that averaged different gradients for 10 rounds hold different Adam moments,
and the same averaged gradient then moves their (equal) parameters apart. Measured on the
2-core box (deterministic): before the moments were carried (previous session, what-if
patch) params-only re-grew 1.47x as fast as before the cut, the what-if 0.53x. With the real
implementation: params-only 1.55x, with moments 0.38x (0.25x of params-only); SGD 1.28x.

Usage: python benchmarks/bench_split_regrowth.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import Scenario, scenario_from_data

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "split-heal.yaml"
BEFORE = (1, 4)  # gradient rounds before the cut
AFTER = (22, 29)  # gradient rounds after the heal and the parameter round at 20


def slope(div: Any, lo: int, hi: int) -> float:
    xs = np.arange(lo, hi + 1, dtype="float64")
    return float(np.polyfit(xs, div.loc[lo:hi].to_numpy(dtype="float64"), 1)[0])


def split_heal(optimizer: str, lr: float, moment_bound: float, rounds: int = 30) -> Scenario:
    """scenarios/split-heal.yaml with this optimizer, learning rate and moment setting."""
    data = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))
    data["learning"].update(optimizer=optimizer, lr=lr)
    data["protocol"]["sync_moment_bound"] = moment_bound
    data["rounds"]["target"] = rounds
    return scenario_from_data(data, str(SCENARIO))


def run(optimizer: str, lr: float, moment_bound: float) -> tuple[float, float, int]:
    """(growth per round before the cut, after the heal, states loaded)."""
    res = SimDriver(split_heal(optimizer, lr, moment_bound)).run()
    tables = res.recorder.tables()
    div = tables["swarm"].to_pandas().set_index("round")["divergence"]
    events = tables["events"].to_pandas()
    loads = int((events["kind"] == "load_state").sum())
    return slope(div, *BEFORE), slope(div, *AFTER), loads


def main() -> None:
    ratios: dict[str, float] = {}
    for label, opt, lr, bound in (
        ("Adam, state sync carries parameters only (sync_moment_bound: 0)", "adam", 0.01, 0.0),
        ("Adam, state sync carries the moments (default)", "adam", 0.01, 8.0),
        ("SGD (no optimizer state; control)", "sgd", 0.3, 8.0),
    ):
        before, after, loads = run(opt, lr, bound)
        ratios[label] = after / before
        print(
            f"{label}: divergence growth per round before the cut {before:.5f}, after the "
            f"heal {after:.5f}; ratio {after / before:.2f} (goal 1.0: no faster than before); "
            f"{loads} states loaded"
        )
    off, on = list(ratios.values())[:2]
    print(f"re-growth with moments / parameters only: {on / off:.2f} (goal < 1)")


if __name__ == "__main__":
    main()
