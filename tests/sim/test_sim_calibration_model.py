"""The sim's model terms that sim-to-real calibration (issue 15, benchmarks/bench_calibrate.py)
found missing: a node's CPU for bulk messages, and a node that moved on to the next round
keeping its previous round's sends alive (the real node never cancels them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

TWO = """
name: cpu
seed: 1
nodes: {{count: 2}}
topology: {{kind: full, latency_ms: 0}}
links: {{bandwidth: [{{uplink_mbps: 8, downlink_mbps: 8}}]}}
compute:
  classes: [{{step_time: {{dist: constant, value: 1.0}}, message_s_per_mb: {cost}}}]
learning: {{hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 32,
           eval_samples: 32, virtual_payload_bytes: 1000000}}
protocol: {{quorum: 1.0, min_peers: 2, round_timeout: 20, heartbeat_interval: 1}}
rounds: {{target: 3}}
"""


def _closes(cost: float) -> list[float]:
    res = SimDriver(parse_scenario(TWO.format(cost=cost))).run()
    rounds = res.recorder.tables()["rounds"].to_pandas()
    assert (rounds.outcome == "average").all()
    return sorted(rounds.groupby("round").t_close.max())


def test_message_cpu_is_charged_once_to_encode_and_once_to_decode() -> None:
    # Two nodes, constant steps: a round is step + encode + transfer + decode, and both
    # nodes do the same at once, so each round is 2 * cost * size longer (size: the
    # 1 MB payload plus the 300-byte envelope the sim adds).
    free, paid = _closes(0.0), _closes(0.25)
    extra = 2 * 0.25 * 1.0003
    for k, (a, b) in enumerate(zip(free, paid, strict=True)):
        assert b - a == pytest.approx((k + 1) * extra, rel=1e-9)


def test_a_node_ahead_keeps_its_previous_rounds_sends_alive() -> None:
    # calibrate-6 with spread-out real step times: a node that closes round r first and
    # sends round r+1 while its round-r copies are still uploading must not cancel them
    # (the real node never does): measured before the fix, three of six rounds waited for
    # the 20 s timeout because everyone else missed that node's update.
    data = yaml.safe_load((SCENARIOS / "calibrate-6.yaml").read_text())
    data["compute"]["classes"][0]["step_time"] = {
        "dist": "lognormal",
        "median": 0.29,
        "sigma": 0.75,
    }
    data["learning"]["virtual_payload_bytes"] = 614336
    res = SimDriver(parse_scenario(yaml.safe_dump(data))).run()
    rounds = res.recorder.tables()["rounds"].to_pandas()
    assert len(rounds) == 36
    assert (rounds.contributors == 6).all()
    assert (rounds.t_close - rounds.t_open).max() < 5.0
