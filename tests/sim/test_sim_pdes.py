"""Partitioned runs (sim/pdes.py): the same seed gives the same tables whatever the cut.

The worlds run in this process here (``LocalParts``); Ray actors run the same ``PartWorld``
code (benchmarks/bench_pdes.py checks a Ray run's tables against these and times it: a Ray
start costs ~10-30 s on a 2-core box, too much for the timed suite).
"""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest
import torch

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.learning import BatchedLearning, LearningError
from swarm_tune.sim.pdes import pack
from swarm_tune.sim.pdes_world import PartitionError, PartWorld, check_partitionable
from swarm_tune.sim.recorder import WALL_CLOCK_COLUMNS
from swarm_tune.sim.runner import run_scenario
from swarm_tune.sim.scenario import parse_scenario

# Equal step times and no jitter, so contributions (and heartbeats) from several senders reach
# a receiver at the same instant: which of them makes the quorum is the tie-break's to decide.
# Flat rounds over bulk transfers (100 kB > the control lane's 64 KiB) and control messages,
# loss (drawn per sender), churn with crashes, late joiners (dials decided on the
# boundary's online set), and a Sybil coalition of 3 sharing one crafted update.
WORLD = """
name: pdes
seed: 5
nodes: {count: 12}
topology: {kind: full, latency_ms: 20}
links:
  loss: 0.01
compute:
  classes: [{step_time: {dist: constant, value: 1.0}}]
churn:
  fraction: 0.3
  session: {dist: exponential, mean: 8}
  offline: {dist: exponential, mean: 3}
  crash_probability: 0.5
  first_leave_after: 2
  joiners: {count: 2, at: {dist: uniform, low: 1, high: 4}}
adversaries:
  - {behaviour: sign_flip, count: 3, sybil: true, group_size: 3}
learning: {hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 64,
           eval_samples: 64, virtual_payload_bytes: 100000}
protocol: {quorum: 0.8, round_timeout: 3, heartbeat_interval: 1, eviction_timeout: 4}
rounds: {target: 4}
outputs: {eval_every: 2, eval_sample: 6}
"""


def _tables(parts: int) -> dict[str, pa.Table]:
    out = run_scenario(parse_scenario(WORLD), write=False, parts=parts)
    assert out.result.stop_reason == "target_round"
    tables = out.result.recorder.tables()
    for name, cols in WALL_CLOCK_COLUMNS.items():
        tables[name] = tables[name].drop_columns(list(cols))
    return tables


def test_partition_count_does_not_change_the_tables() -> None:
    one = _tables(1)
    rounds = one["rounds"].to_pydict()
    # The world did what the comparison needs: rounds closed on many nodes, with averages,
    # rejections (the Sybils), crashes/rejoins and an evaluated swarm.
    assert len(set(rounds["node_index"])) >= 8
    assert "average" in rounds["outcome"]
    assert one["rejections"].num_rows > 0
    kinds = set(one["events"].column("kind").to_pylist())
    assert {"join", "leave", "rejoin", "sync_done"} <= kinds
    assert one["swarm"].column("eval_loss_mean_model").drop_null().to_pylist()
    for parts in (2, 3):
        other = _tables(parts)
        for name, table in one.items():
            # pandas: NaN equals NaN (Arrow's ``equals`` says a NaN loss differs from itself).
            assert other[name].to_pandas().equals(table.to_pandas()), f"{name}, {parts} parts"


def test_a_posted_view_travels_as_its_own_bytes() -> None:
    chunk = torch.arange(4096, dtype=torch.float32).reshape(64, 64)
    row = chunk[5]  # a view: its storage is the whole chunk
    blob = pack([(1.0, 0, 1, (3, 0.5, 0, {"params": row}, 10))])
    assert len(blob) < chunk.nbytes // 4
    (back,) = pickle.loads(blob)
    assert torch.equal(back[3][3]["params"], row)


def test_what_the_partition_model_cannot_express_is_refused() -> None:
    text = WORLD.replace("value: 1.0}}]", "value: 1.0}, transport_s_per_mb: 0.01}]")
    with pytest.raises(PartitionError, match="transport_s_per_mb"):
        check_partitionable(parse_scenario(text))
    text = WORLD.replace("  loss: 0.01", "  loss: 0.01\n  bulk_lead_first: true")
    with pytest.raises(PartitionError, match="bulk_lead_first"):
        check_partitionable(parse_scenario(text))


def test_a_partition_holds_only_its_own_nodes_heavy_state() -> None:
    scenario = parse_scenario(WORLD)
    engine = SimDriver(scenario).engine
    assert isinstance(engine, BatchedLearning)
    whole = engine.state_bytes()
    worlds = [PartWorld(scenario, k, 3) for k in range(3)]
    engines = [w.engine for w in worlds]
    assert all(isinstance(e, BatchedLearning) for e in engines)
    for k, world in enumerate(worlds):
        for node in world.nodes:
            own = world.owner[node.index] == k
            assert (node.learner is not None) == own, (k, node.index)
            assert (node.compute_rng is not None) == own
            assert node.proto is None or own  # started cores: own nodes only
        assert any(n.proto is not None for n in world.nodes)
        with pytest.raises(LearningError, match="not held"):
            world.engine.add_node(worlds[(k + 1) % 3].owned[0], 0)
    # The learning rows are split, not copied: the partitions' bytes add up to one world's.
    assert sum(e.state_bytes() for e in engines if isinstance(e, BatchedLearning)) == whole
