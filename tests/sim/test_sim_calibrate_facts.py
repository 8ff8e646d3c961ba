"""What the sim is given from a real run (sim/calibrate.py): read from the nodes' logs, fed into
every compute class; the rest of the scenario is left for the sim to predict."""

from __future__ import annotations

import pytest

from swarm_tune.sim.calibrate import fed_scenario, real_facts, with_profile
from swarm_tune.sim.calibrate_real import NodeLog

MB = 1_000_000


def _node(name: str, step: float, cpu: float, loop: float) -> NodeLog:
    records = [
        *({"event": "train.done", "round": r, "seconds": step, "cpu_s": cpu, "loss": 4.0 - r}
          for r in range(2)),
        {"event": "message.encoded", "bytes": MB, "cpu_s": 0.002, "wall_s": 0.01},
        {"event": "message.handled", "bytes": MB, "cpu_s": 0.002, "wall_s": 0.01},
        {"event": "message.handled", "bytes": 2 * MB, "cpu_s": 0.002, "wall_s": 0.01},
        *({"event": "round.closed", "round": r, "duration_s": 2.0, "outcome": "average",
           "loop_cpu_s": loop} for r in range(2)),
        {"event": "node.stopped", "metrics": {
            "bytes_out": 4 * MB, "bytes_out_by_message": {"Contribution": 2 * MB}}},
    ]  # fmt: skip
    return NodeLog(name, records)


def test_facts_come_from_the_logs_and_feed_every_compute_class() -> None:
    facts = real_facts([_node("n0", 0.5, 0.25, 0.4), _node("n1", 0.5, 0.25, 0.4)])
    assert facts.stats.median_round_s == 2.0
    assert facts.stats.bytes_per_node_round == 2 * MB  # 4 MB over 2 rounds
    assert facts.payload == MB  # 2 MB of contributions / (2 rounds x 1 peer)
    assert facts.slowdown == pytest.approx(2.0)  # diagnostics, not fed
    assert facts.loop_cpu_per_mb == pytest.approx(0.8 / 4)  # 2 x 0.4 s over 4 MB
    assert facts.message_s_per_mb == pytest.approx(0.01)  # median of 0.01/1, 0.01/1, 0.01/2
    assert facts.stats.loss_curve == {0: 1.0, 1: 0.75}
    base = {"name": "c", "nodes": {"count": 2}, "compute": {"classes": [{}, {"name": "b"}]}}
    fed = fed_scenario(with_profile(base, "wan10"), facts)
    assert fed["links"]["bandwidth"] == [{"uplink_mbps": 10, "downlink_mbps": 10}]
    assert fed["topology"]["latency_ms"] == 60.0 and fed["name"] == "c-wan10"
    for cls in fed["compute"]["classes"]:
        assert cls["message_s_per_mb"] == 0.01 and cls["step_time"]["median"] == 0.5
    assert fed["learning"]["virtual_payload_bytes"] == MB


def test_a_node_that_never_stopped_is_refused() -> None:
    n = _node("n0", 0.5, 0.25, 0.4)
    with pytest.raises(RuntimeError, match="n0"):
        real_facts([NodeLog("n0", [r for r in n.records if r["event"] != "node.stopped"])])
