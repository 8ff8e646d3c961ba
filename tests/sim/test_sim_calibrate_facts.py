"""What the sim is given from a real run (sim/calibrate.py): read from the nodes' logs and the
machine's CPU samples, fed into every compute class; the rest of the scenario is left for
the sim to predict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from swarm_tune.sim.calibrate import fed_scenario, real_facts, with_profile
from swarm_tune.sim.calibrate_real import NodeLog, TwinRun
from swarm_tune.sim.host_cpu import CpuSample

MB = 1_000_000
T0 = 1_800_000_000.0  # epoch seconds of the first record


def _at(t: float) -> str:
    return datetime.fromtimestamp(T0 + t, tz=UTC).isoformat()


def _node(name: str, step: float, cpu: float) -> NodeLog:
    # Two rounds of 2 s; round 1 (the one after start-up) moves 1 MB out and 2 MB in and
    # costs 0.9 s of process CPU, 0.3 s of it the learner's step.
    records = [
        {"event": "train.done", "round": 0, "seconds": step, "cpu_s": cpu, "loss": 4.0,
         "timestamp": _at(1.0)},
        {"event": "round.closed", "round": 0, "duration_s": 2.0, "outcome": "average",
         "loop_cpu_s": 0.4, "proc_cpu_s": 5.0, "timestamp": _at(2.0)},
        {"event": "train.done", "round": 1, "seconds": step, "cpu_s": 0.3, "loss": 3.0,
         "timestamp": _at(2.5)},
        {"event": "message.encoded", "bytes": MB, "cpu_s": 0.002, "wall_s": 0.01,
         "timestamp": _at(2.6)},
        {"event": "bulk.sent", "bytes": MB, "seconds": 0.5, "timestamp": _at(3.0)},
        {"event": "message.handled", "bytes": MB, "cpu_s": 0.002, "wall_s": 0.01,
         "timestamp": _at(3.1)},
        {"event": "message.handled", "bytes": 2 * MB, "cpu_s": 0.002, "wall_s": 0.01,
         "timestamp": _at(3.2)},
        {"event": "round.closed", "round": 1, "duration_s": 2.0, "outcome": "average",
         "loop_cpu_s": 0.4, "proc_cpu_s": 0.9 + 0.3, "timestamp": _at(4.0)},
        {"event": "node.stopped", "timestamp": _at(4.5), "metrics": {
            "bytes_out": 4 * MB, "bytes_out_by_message": {"Contribution": 2 * MB}}},
    ]  # fmt: skip
    return NodeLog(name, records)


def _samples(others: float) -> list[CpuSample]:
    # The machine's busy CPU grows by the nodes' own plus ``others`` cores, every second.
    return [CpuSample(T0 + t, t * (1.5 + others), t * 1.5) for t in range(6)]


def test_facts_come_from_the_logs_and_feed_every_compute_class() -> None:
    nodes = [_node("n0", 0.5, 0.25), _node("n1", 0.5, 0.25)]
    facts = real_facts(TwinRun(nodes, _samples(others=0.8), cores=2))
    assert facts.stats.median_round_s == 2.0
    assert facts.stats.bytes_per_node_round == 2 * MB  # 4 MB over 2 rounds
    assert facts.payload == MB  # 2 MB of contributions / (2 rounds x 1 peer)
    # round 1 only: 1.2 s of process CPU less 0.3 s of step, over 1 MB sent + 3 MB received
    assert facts.transport_s_per_mb == pytest.approx(0.9 / 4)
    assert facts.cores == pytest.approx((2 - 0.8) / 2)  # what the others left, per node
    assert facts.slowdown == pytest.approx(0.5 / 0.275)  # diagnostics, not fed
    assert facts.message_s_per_mb == pytest.approx(0.01)  # median of 0.01/1, 0.01/1, 0.01/2
    assert facts.stats.loss_curve == {0: 1.0, 1: 0.75}
    base = {"name": "c", "nodes": {"count": 2}, "compute": {"classes": [{}, {"name": "b"}]}}
    fed = fed_scenario(with_profile(base, "wan10"), facts)
    assert fed["links"]["bandwidth"] == [{"uplink_mbps": 10, "downlink_mbps": 10}]
    assert fed["topology"]["latency_ms"] == 60.0 and fed["name"] == "c-wan10"
    for cls in fed["compute"]["classes"]:
        assert cls["step_time"]["median"] == 0.5
        assert cls["transport_s_per_mb"] == pytest.approx(0.225) and cls["cores"] == 0.6
        assert cls["message_s_per_mb"] == 0.0  # its CPU is in transport_s_per_mb
    assert fed["learning"]["virtual_payload_bytes"] == MB
    # an idle machine: at most one core per node (a node's transport is one event loop)
    assert real_facts(TwinRun(nodes, _samples(others=0.0), cores=4)).cores == 1.0


def test_a_node_that_never_stopped_is_refused() -> None:
    n = _node("n0", 0.5, 0.25)
    run = TwinRun([NodeLog("n0", [r for r in n.records if r["event"] != "node.stopped"])], [], 2)
    with pytest.raises(RuntimeError, match="n0"):
        real_facts(run)
