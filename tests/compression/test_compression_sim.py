"""The simulator charges what the wire would carry: a compressed contribution's bytes."""

from __future__ import annotations

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import parse_scenario

SCENARIO = """
name: compressed
seed: 5
nodes: {{count: 4}}
topology: {{kind: full, latency_ms: 20}}
compute:
  classes: [{{step_time: {{dist: lognormal, median: 1.0, sigma: 0.1}}}}]
learning: {{hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 64,
           eval_samples: 64, virtual_payload_bytes: 1000000}}
protocol: {{quorum: 1.0, round_timeout: 5, heartbeat_interval: 1, eviction_timeout: 6,
           param_sync_every: 0, compression: "{codec}"}}
rounds: {{target: 8}}
outputs: {{eval_every: 8}}
"""


def _run(codec: str) -> tuple[int, float]:
    driver = SimDriver(parse_scenario(SCENARIO.format(codec=codec)))
    assert driver.run().stop_reason == "target_round"
    return driver.network.sent_bytes, driver.engine.mean_eval_loss(range(4))


def test_sim_charges_compressed_bytes_and_still_learns() -> None:
    raw_bytes, raw_loss = _run("none")
    int8_bytes, int8_loss = _run("int8:64")
    top_bytes, top_loss = _run("topk:0.01+int8")
    # int8 with 64-value blocks: 1 + 4/64 bytes per value instead of 4 (~3.8x fewer)
    assert raw_bytes / int8_bytes > 3.0
    assert int8_bytes / top_bytes > 10.0
    assert abs(int8_loss - raw_loss) < 0.05 * raw_loss
    assert top_loss < 1.2 * raw_loss  # error feedback keeps even 1% top-k training
