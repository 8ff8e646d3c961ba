"""A/B: the direction test's weighted median by sort (before) vs by selection (equal weights).

Why: a cProfile of Flower's task, flat, 300 nodes x 5 rounds, put numpy's argsort (3 per round
close, the [pool x 512] direction median) at the top of the profile (~14% of the time, ~20%
with its take_along_axis/cumsum/stack). ``weighted_median`` now selects the rank-ceil(n/2)
value when every weight is equal (bit-identical; tests/protocol/test_protocol_median_select).

Runs, interleaved A B A B ... in child processes: A patches the sort-only median back into
the protocol's validation module, B runs the code as shipped. Prints wall and CPU seconds of
each run, the B/A ratio of medians, and whether the runs' rounds tables are identical (they
must be: same seed, same values).

Usage: python benchmarks/bench_median_select.py [--nodes 300] [--pairs 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench_ab import Runs, report  # type: ignore[import-not-found]  # the shared A/B summary

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, sys, time
import numpy as np
import yaml
from swarm_tune.runtime.aggregation import coordinate
from swarm_tune.runtime.protocol import validation
from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import scenario_from_data

path, nodes, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if variant == "A":
    def by_sort(rows, weights):
        if rows.shape[0] == 1:
            return coordinate.as_f32(rows[0].copy())
        values, cumulative = coordinate._sorted_with_weights(rows, weights)
        index = np.argmax(cumulative >= 0.5 - 1e-12, axis=0)
        return coordinate.as_f32(np.take_along_axis(values, index[None, :], axis=0)[0])
    validation.weighted_median = by_sort
data = yaml.safe_load(open(path).read())
data["nodes"]["count"] = nodes
s = scenario_from_data(data)
t0, c0 = time.perf_counter(), time.process_time()
drv = SimDriver(s)
drv.run()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rounds = drv.rec.tables()["rounds"].to_pandas()
digest = hashlib.sha256(rounds.to_csv(index=False).encode()).hexdigest()[:16]
print(json.dumps({"wall": wall, "cpu": cpu, "digest": digest}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=2)
    args = ap.parse_args()
    task = ROOT / "scenarios" / "flower-task.yaml"
    runs: Runs = {"A": [], "B": []}
    print(f"== Flower's task, flat, {args.nodes} nodes x 5 rounds: A = sort, B = selection ==")
    for i in range(args.pairs):
        for variant in ("A", "B"):
            cmd = [sys.executable, "-c", CHILD, str(task), str(args.nodes), variant]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            runs[variant].append(r)
            print(
                f"pair {i} {variant}: wall {r['wall']:.1f} s, cpu {r['cpu']:.1f} s, "
                f"rounds table {r['digest']}"
            )
            sys.stdout.flush()
    report(runs)


if __name__ == "__main__":
    main()
