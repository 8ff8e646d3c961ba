"""Layer shards in the sim: one swarm per slice, each training and shipping its slice only.

The same six nodes run whole-model and with two layer shards (dealt round-robin). With shards
the sim slices its model with the runtime's own ``layer_shard.owned``: a node's protocol spec
is its slice (the two slices partition the model), it trains that slice and leaves the rest at
the shared initial weights, its peers are its own slice's nodes, each round averages that
slice's three contributions, and the traffic falls to what the model predicts: a third of the
peers per node (2 of 5) and about half the payload. The assembled model (each slice averaged
over its nodes, what ``checkpoint reconstruct`` builds) learns, and the run is reproducible.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
import torch

from swarm_tune.runtime.protocol.tensors import ModelSpec
from swarm_tune.runtime.training.layer_shard import LayerShard, owned
from swarm_tune.sim.driver import RunResult, SimDriver
from swarm_tune.sim.learning import BatchedLearning
from swarm_tune.sim.learning_model import block_names
from swarm_tune.sim.recorder import WALL_CLOCK_COLUMNS
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
{extra}
"""


def _run(shards: int, nodes: int = 6) -> tuple[SimDriver, RunResult]:
    drv = SimDriver(parse_scenario(SCENARIO.format(nodes=nodes, shards=shards, extra="")))
    return drv, drv.run()


def _table(res: RunResult, name: str) -> pd.DataFrame:
    table: pa.Table = res.recorder.tables()[name]
    return table.drop_columns(list(WALL_CLOCK_COLUMNS.get(name, ()))).to_pandas()


def test_two_layer_shards_are_two_swarms_at_a_fifth_of_the_bytes() -> None:
    _, whole = _run(1)
    drv, res = _run(2)
    for node in drv.nodes:
        assert node.proto is not None
        peers = {r.peer for r in node.proto.peers.records()}
        assert len(peers) == 2 and all(int(p[1:]) % 2 == node.index % 2 for p in peers)
    accepted = [int(_table(r, "rounds")["accepted"].max()) for r in (whole, res)]
    assert accepted == [5, 2]  # others' contributions per round
    sent = [int(_table(r, "swarm")["bytes"].iloc[-1]) for r in (whole, res)]
    ratio = sent[1] / sent[0]
    share = [p / sum(drv.payloads) for p in drv.payloads]
    print(f"bytes with 2 layer shards / whole model: {ratio:.3f} (model: 2/5 x 1/2 = 0.2)")
    print(f"payload share per shard: {share[0]:.3f}, {share[1]:.3f}")
    assert 0.15 < ratio < 0.3


def test_each_node_trains_and_averages_its_slice_as_the_runtime_does() -> None:
    drv, res = _run(2)
    eng = drv.engine
    assert isinstance(eng, BatchedLearning)
    # The slices are the runtime's: owned() on the surrogate's transformer-style names.
    names = ["emb", "w1", "b1", "w2", "b2"]  # init_params' (the model's) order
    as_block = block_names(names)
    for k in range(2):
        mine = {n for n in names if as_block[n] in owned(list(as_block.values()), LayerShard(k, 2))}
        a, b = eng._cols[k]
        cols = {n for n, o, size, _ in eng._layout if a <= o and o + size <= b}
        assert cols == mine
    assert "emb" in {n for n, o, *_ in eng._layout if o < eng._cols[0][1]}
    assert drv.specs[0].numel + drv.specs[1].numel == drv.spec.numel
    init = eng._init_row
    final: dict[int, set[str]] = {0: set(), 1: set()}
    for node in drv.nodes:
        k = node.index % 2
        assert node.proto is not None
        params = node.learner.parameters()
        assert ModelSpec.from_tensors(params) == drv.specs[k]
        # Trained inside its slice, untouched (the shared start) outside it.
        a, b = eng._cols[k]
        row = eng._flat[node.index]
        assert torch.equal(row[:a], init[:a]) and torch.equal(row[b:], init[b:])
        assert not torch.equal(row[a:b], init[a:b])
        final[k].add(eng.param_digest(node.index))
    # quorum 1.0: every round each slice's nodes apply the same average: one replica per slice
    assert all(len(d) == 1 for d in final.values())
    swarm = _table(res, "swarm")
    losses = swarm["eval_loss_mean_model"].dropna()
    print(f"assembled model's held-out loss: {losses.iloc[0]:.4f} -> {losses.iloc[-1]:.4f}")
    assert losses.iloc[-1] < losses.iloc[0]
    assert float(swarm["divergence"].dropna().iloc[-1]) == 0.0
    # Same seed, same scenario: the same run, table for table (NaN = NaN: "not measured").
    _, again = _run(2)
    for name in ("rounds", "swarm", "events"):
        pd.testing.assert_frame_equal(_table(again, name), _table(res, name), check_exact=True)


@pytest.mark.parametrize(
    ("nodes", "shards", "extra", "message"),
    [
        (1, 2, "", "2 layer shards but only 1 nodes"),
        (3, 2, "", "min_peers 2 > 1 nodes per layer shard"),
        (6, 3, "", "3 layer shards but the surrogate model has only 2 layers"),
        (6, 2, "adversaries: [{behaviour: sign_flip, count: 1}]", "not modelled with layer"),
    ],
)
def test_infeasible_layer_shards_are_refused(
    nodes: int, shards: int, extra: str, message: str
) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(SCENARIO.format(nodes=nodes, shards=shards, extra=extra))
