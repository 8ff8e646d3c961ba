"""Sweeps: grid expansion, a real 12-point sweep killed mid-way and resumed.

Ray has its own file (test_analysis_sweep_ray.py): a real two-node cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.analysis.report import plot_data
from swarm_tune.sim.scenario import load_scenario, parse_scenario
from swarm_tune.sim.sweep import SweepError, expand
from swarm_tune.sim.sweep_run import DONE, run_sweep

SWEEP = Path(__file__).resolve().parents[2] / "scenarios" / "sweep-churn.yaml"


def _small_sweep(tmp: Path, rounds: int = 4, **sweep: object) -> Path:
    data = yaml.safe_load(SWEEP.read_text(encoding="utf-8"))
    data["rounds"]["target"] = rounds
    if sweep:
        data["sweep"] = sweep
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_shipped_sweep_has_at_least_8_points() -> None:
    points = expand(load_scenario(SWEEP))
    assert len(points) >= 8
    assert {p.scenario.protocol.strategy for p in points} == {"flat", "gossip"}
    assert len({p.scenario.churn.fraction for p in points}) >= 2
    assert len({p.point_id for p in points}) == len(points)


@settings(max_examples=25, deadline=None)
@given(
    fractions=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5]), min_size=1, max_size=3, unique=True),
    counts=st.lists(st.integers(2, 12), min_size=1, max_size=3, unique=True),
    seeds=st.lists(st.integers(0, 2**31), min_size=1, max_size=3, unique=True),
)
def test_expansion_is_the_full_grid(
    fractions: list[float], counts: list[int], seeds: list[int]
) -> None:
    text = SWEEP.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["churn"]["fraction"] = 0.0
    data["sweep"] = {
        "grid": {"churn.fraction": fractions, "protocol.gossip_fanout": counts},
        "seeds": seeds,
    }
    points = expand(parse_scenario(yaml.safe_dump(data)))
    assert len(points) == len(fractions) * len(counts) * len(seeds)
    got = {(p.scenario.churn.fraction, p.scenario.protocol.gossip_fanout, p.seed) for p in points}
    assert got == {(f, c, s) for f in fractions for c in counts for s in seeds}
    assert all(p.scenario.seed == p.seed and p.scenario.sweep is None for p in points)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"grid": {"churn.nope": [1]}}, "no field 'nope'"),
        ({"grid": {"adversaries.3.count": [1]}}, "not an index"),
        ({"grid": {"churn.fraction": []}}, "non-empty list"),
        ({"grid": {}, "seeds": [1, 1]}, "duplicates"),
        ({"grid": {}, "seeds": "1"}, "list of integers"),
        ({"grids": {}}, "unknown keys"),
        (
            {"grid": {"nodes.count": [0]}},
            r"nodes\.count=0\]:\d+: nodes\.count: Input should be greater",
        ),
        ({"grid": {"protocol.min_peers": [99]}}, "min_peers 99 > 12"),
    ],
)
def test_bad_sweep_blocks_are_clear_errors(block: dict, message: str) -> None:
    data = yaml.safe_load(SWEEP.read_text(encoding="utf-8"))
    data["sweep"] = block
    with pytest.raises(SweepError, match=message):
        expand(parse_scenario(yaml.safe_dump(data)))


def _done(out: Path) -> dict[str, str]:
    return {
        p.parent.name: p.read_text(encoding="utf-8") for p in sorted(out.glob(f"points/*/{DONE}"))
    }


@pytest.mark.slow
def test_sweep_killed_midway_resumes_and_skips_finished_points(tmp_path: Path) -> None:
    scenario = _small_sweep(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "swarm_tune.runtime.cli", "sim", "sweep", str(scenario)]
    proc = subprocess.Popen(
        [*cmd, "--workers", "1", "--out", str(out)],
        start_new_session=True,  # its own process group: the kill reaches its pool worker too
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_done(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _done(out)
    assert 2 <= len(before) < 12, f"{len(before)} points finished before the kill"

    result = run_sweep(scenario, out, workers=2)
    assert (result.total, result.skipped, result.ran) == (12, len(before), 12 - len(before))
    after = _done(out)
    assert len(after) == 12
    assert all(after[k] == v for k, v in before.items())  # finished points were not redone
    assert not list((out / "points").glob(".tmp-*"))
    table = pd.read_parquet(out / "sweep.parquet")
    assert len(table) == 12 and table["final_loss"].notna().all()
    for _, row in table.iterrows():  # the gathered table is what each point's run wrote
        swarm = pd.read_parquet(out / "points" / row["point"] / "swarm.parquet")
        assert row["final_loss"] == swarm["eval_loss_median"].dropna().iloc[-1]
    # One comparison report, one line per configuration (6 configs x 2 seeds) + baseline.
    data = plot_data((out / "report.html").read_text(encoding="utf-8"))
    assert len(data["loss_vs_round"]["series"]) == 6 + 1

    again = run_sweep(scenario, out, workers=2)
    assert (again.skipped, again.ran) == (12, 0)
