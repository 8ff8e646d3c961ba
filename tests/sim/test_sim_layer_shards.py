"""Layer shards in the sim: one swarm per slice, each shipping its slice of the payload.

The same six nodes run twice, whole-model and with two layer shards (dealt round-robin). With
shards a node's peers are its own slice's nodes only, each round averages that slice's three
contributions, and the traffic falls to what the model predicts: a third of the peers per
node (2 of 5) and half the payload.
"""

from __future__ import annotations

import pytest

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import ScenarioError, parse_scenario

SCENARIO = """
name: layers
seed: 5
nodes: {{count: {nodes}}}
topology: {{kind: full, latency_ms: 20}}
compute:
  classes: [{{step_time: {{dist: lognormal, median: 1.0, sigma: 0.1}}}}]
learning: {{hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 64,
           eval_samples: 64, virtual_payload_bytes: 100000}}
protocol: {{quorum: 1.0, min_peers: 2, round_timeout: 5, heartbeat_interval: 1,
           eviction_timeout: 6, model_shard_total: {shards}}}
rounds: {{target: 6}}
"""


def _run(shards: int) -> tuple[SimDriver, int, int]:
    drv = SimDriver(parse_scenario(SCENARIO.format(nodes=6, shards=shards)))
    res = drv.run()
    tables = res.recorder.tables()
    rounds = tables["rounds"].to_pandas()
    swarm = tables["swarm"].to_pandas()
    return drv, int(rounds["accepted"].max()), int(swarm["bytes"].iloc[-1])


def test_two_layer_shards_are_two_swarms_at_a_fifth_of_the_bytes() -> None:
    _, whole_accepted, whole_bytes = _run(1)
    drv, accepted, sent = _run(2)
    for node in drv.nodes:
        assert node.proto is not None
        peers = {r.peer for r in node.proto.peers.records()}
        assert len(peers) == 2 and all(int(p[1:]) % 2 == node.index % 2 for p in peers)
    assert (whole_accepted, accepted) == (5, 2)  # others' contributions per round
    ratio = sent / whole_bytes
    print(f"bytes with 2 layer shards / whole model: {ratio:.3f} (model: 2/5 x 1/2 = 0.2)")
    assert 0.15 < ratio < 0.3


@pytest.mark.parametrize(
    ("nodes", "shards", "message"),
    [(1, 2, "2 layer shards but only 1 nodes"), (3, 2, "min_peers 2 > 1 nodes per layer shard")],
)
def test_infeasible_layer_shards_are_refused(nodes: int, shards: int, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(SCENARIO.format(nodes=nodes, shards=shards))
