"""After a healed split, how fast does replica divergence grow back, and why?

Issue 15 (item 6) saw divergence re-grow ~3x faster after a healed split than before the cut,
until the next parameter round. Question: should state sync carry optimizer state?

The experiment: 12 nodes, flat, a scripted 10-round partition into two halves (eviction
timeout long, so the halves talk again at the heal: this needs no redial), non-IID shards,
parameter averaging every 10 rounds. Divergence (true mean relative L2 distance, eval every
round) grows at some rate per gradient round before the cut; after the heal the replicas are
re-aligned (state sync + the next parameter round), and the rate at which they drift apart
again is compared with the rate before the cut, for:

* Adam, state sync as it is (parameters only: each node keeps its own Adam moments);
* Adam, with the loading node also taking the mean moments of the others (an omniscient
  what-if patched into the sim's engine: what carrying optimizer state would buy);
* SGD (no optimizer state: the control).

Measured on the 2-core box (seed 21; deterministic): Adam params-only re-grows 1.47x as
fast after the heal as before the cut; with the moments carried 0.53x; SGD 1.17x. The extra
re-growth is the optimizer state that state sync leaves behind: two halves that averaged
different gradients for 10 rounds hold different Adam moments, and the same averaged
gradient then moves their (equal) parameters apart. Carrying the moments (averaged over the
agreeing responders, as the parameters are) is the fix; it is a wire + core + learner change
(StateResponse/LoadState), not a sim one.

Usage: python benchmarks/bench_split_regrowth.py
"""

from __future__ import annotations

from typing import Any

import numpy as np

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.learning import BatchedLearning
from swarm_tune.sim.scenario import parse_scenario

SCENARIO = """
name: split
seed: 21
nodes: {count: 12}
topology: {kind: full, latency_ms: 20}
links: {bandwidth: [{uplink_mbps: 100, downlink_mbps: 200}]}
compute: {classes: [{step_time: {dist: lognormal, median: 1.0, sigma: 0.1}}]}
groups:
  - {name: west, count: 6}
timeline:
  - {round: 5, do: partition, sides: [[west]]}
  - {round: 15, do: heal}
learning: {hidden: 16, embed: 4, context: 4, batch_size: 16, samples_per_node: 128,
           eval_samples: 128, lr: LR, optimizer: OPT, non_iid: 0.5}
protocol: {quorum: 0.8, round_timeout: 6, heartbeat_interval: 1, eviction_timeout: 400,
           param_sync_every: 10, drift_bound: 0.05}
rounds: {target: 30}
outputs: {eval_every: 1}
"""
BEFORE = (1, 4)  # gradient rounds before the cut
AFTER = (22, 29)  # gradient rounds after the heal and the parameter round at 20


def slope(div: Any, lo: int, hi: int) -> float:
    xs = np.arange(lo, hi + 1, dtype="float64")
    return float(np.polyfit(xs, div.loc[lo:hi].to_numpy(dtype="float64"), 1)[0])


def run(optimizer: str, lr: float, carry_moments: bool) -> tuple[float, float]:
    text = SCENARIO.replace("OPT", optimizer).replace("LR", str(lr))
    drv = SimDriver(parse_scenario(text))
    eng = drv.engine
    assert isinstance(eng, BatchedLearning)
    if carry_moments:
        load = eng.load_state

        def load_with_moments(i: int, params: Any) -> None:
            load(i, params)
            rows = [r for r in range(len(drv.nodes)) if drv.nodes[r].online and r != i]
            eng._m[i] = eng._m[rows].mean(0)
            eng._v[i] = eng._v[rows].mean(0)

        eng.load_state = load_with_moments  # type: ignore[method-assign,assignment]
    res = drv.run()
    div = res.recorder.tables()["swarm"].to_pandas().set_index("round")["divergence"]
    return slope(div, *BEFORE), slope(div, *AFTER)


def main() -> None:
    for label, opt, lr, carry in (
        ("Adam, state sync carries parameters only (today)", "adam", 0.01, False),
        ("Adam, what-if: the loader also takes the mean moments", "adam", 0.01, True),
        ("SGD (no optimizer state; control)", "sgd", 0.3, False),
    ):
        before, after = run(opt, lr, carry)
        print(
            f"{label}: divergence growth per round before the cut {before:.5f}, after the "
            f"heal {after:.5f}; ratio {after / before:.2f} (goal 1.0: no faster than before)"
        )


if __name__ == "__main__":
    main()
