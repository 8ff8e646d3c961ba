"""State sync that carries Adam's moments stops replicas re-diverging after a healed split.

scenarios/split-heal.yaml: two halves apart for 10 rounds, realigned by state sync at the
heal. With parameters only, each node keeps the moments its half built, and the same
averaged gradients move the equal parameters apart again; with the moments (the default)
they stay together. benchmarks/bench_split_regrowth.py measures the full 30 rounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import scenario_from_data

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "split-heal.yaml"
AFTER = (21, 25)  # gradient rounds after the heal (15), state sync and parameter round (20)


def regrowth(moment_bound: float) -> tuple[float, int]:
    """(divergence growth per round after the heal, states loaded)."""
    data = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))
    data["protocol"]["sync_moment_bound"] = moment_bound
    data["rounds"]["target"] = AFTER[1] + 1
    tables = SimDriver(scenario_from_data(data)).run().recorder.tables()
    div = tables["swarm"].to_pandas().set_index("round")["divergence"].loc[slice(*AFTER)]
    loads = int((tables["events"].to_pandas()["kind"] == "load_state").sum())
    return float(np.polyfit(div.index.to_numpy(float), div.to_numpy(float), 1)[0]), loads


def test_moments_in_state_sync_slow_regrowth_after_a_healed_split() -> None:
    without, loads_without = regrowth(0.0)
    with_moments, loads_with = regrowth(8.0)
    assert loads_without >= 6 and loads_with >= 6  # state sync realigned the halves
    assert without > 0
    assert with_moments < 0.5 * without, (with_moments, without)
