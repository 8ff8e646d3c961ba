"""The per-round explanation plots hold the numbers the run recorded (analysis/explain.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swarm_tune.analysis.explain import explain_plots, round_at
from swarm_tune.analysis.load import load_run
from swarm_tune.analysis.report import report_plots
from swarm_tune.sim.runner import run_scenario
from swarm_tune.sim.scenario import parse_scenario

SCENARIO = """\
name: explain
seed: 3
nodes: {count: 10}
topology: {kind: full, latency_ms: 20}
links: {bandwidth: [{uplink_mbps: 100, downlink_mbps: 200}]}
compute: {classes: [{step_time: {dist: lognormal, median: 1.0, sigma: 0.1}}]}
groups:
  - {name: slow, count: 3, bandwidth: {uplink_mbps: 2, downlink_mbps: 20}}
  - {name: cut, count: 3}
timeline:
  - {round: 3, do: partition, sides: [[cut]]}
  - {round: 6, do: heal}
learning: {hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 64,
           eval_samples: 64, virtual_payload_bytes: 400000}
protocol: {quorum: 0.6, round_timeout: 5, heartbeat_interval: 1, eviction_timeout: 4,
           drift_bound: 0.07}
rounds: {target: 10}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "run"
    run_scenario(parse_scenario(SCENARIO), out)
    return out


def test_explain_plots_hold_the_recorded_numbers(run_dir: Path) -> None:
    run = load_run(run_dir)
    plots = {p.key.split(":")[0]: p for p in explain_plots(run)}
    assert set(plots) == {"contributors", "drift", "membership", "wasted", "groups"}
    series = {(k, s.label): s for k, p in plots.items() for s in p.series}
    r, j, e = run.rounds, run.rejections, run.events
    median = r.groupby("round")["contributors"].median()
    got = series[("contributors", "median node")]
    assert list(got.x) == [float(x) for x in median.index] and list(got.y) == list(median)
    stale = j[j.reason == "stale"].groupby("round").size()
    got = series[("wasted", "updates arriving stale")]
    assert sum(got.y) == stale.sum() > 0
    cancelled = series[("wasted", "transfers cancelled")]
    assert sum(cancelled.y) == run.swarm["cancelled"].iloc[-1] > 0  # the slow group's
    assert series[("drift", "drift_bound 0.07")].y == [0.07]
    # The scripted partition is a mark on every per-round plot, at the round it opened.
    opened = e.loc[e.kind == "partition_open", "t"]
    at = float(round_at(run, opened)[0])
    assert 3.0 <= at < 4.0
    for key in ("contributors", "drift", "membership", "wasted"):
        assert series[(key, "partition opens")].x == [at]
    groups = series[("groups", "averaged")]
    assert set(groups.x) == {"slow", "cut", "(no group)"}
    assert all(0.0 <= y <= 1.0 for y in groups.y)
    # ... and on the report's comparison plots over rounds, with one run.
    loss = next(p for p in report_plots([run]) if p.key == "loss_vs_round")
    assert any(s.label == "partition heals" for s in loss.series)


def test_round_at_interpolates_between_milestones(run_dir: Path) -> None:
    run = load_run(run_dir)
    s = run.swarm
    mid = (s["t"].iloc[2] + s["t"].iloc[3]) / 2
    assert float(round_at(run, np.array([mid]))[0]) == pytest.approx(2.5)
