"""Layer shards on the real runtime: 4 ``swarm-tune node`` processes on loopback.

Two runs of the same rounds on tiny-gpt2 (2 transformer blocks): every node training the whole
model, and ``SWARM_MODEL_SHARD_TOTAL=2`` with nodes 0, 2 on slice 0 and 1, 3 on slice 1. Every
node is given all three others as bootstrap peers, the worst case for the separation: a node
of the other slice is dialled, its frames are refused as another run's, and it is never a
member. Printed per run: bytes each node sent per round (every frame, heartbeats, control and
the refused cross-slice traffic included), who each node averaged with, the held-out loss at
start and end (each node's own model: with shards, the other slice stays at the start); then
the sharded/full byte ratio beside the model's figure (1/3 of the peers x 1/2 of the model =
1/6, plus control traffic).

    nice .venv/bin/python benchmarks/bench_layer_shards_real.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from procs import NodeProc, bench_env, free_port, full_mesh, wait_all_exit  # type: ignore[import-not-found]

NODES = 4


Result = tuple[list[int], list[int], float, float, float]


def run(workdir: Path, rounds: int, shards: int) -> Result:
    env = bench_env(
        rounds,
        SWARM_MODEL_NAME="tiny-gpt2",
        SWARM_NUM_SHARDS=str(NODES),
        SWARM_MODEL_SHARD_TOTAL=str(shards),
    )
    procs = [
        NodeProc(i, free_port(), workdir, env | {"SWARM_MODEL_SHARD_INDEX": str(i % shards)})
        for i in range(NODES)
    ]
    t0 = time.perf_counter()
    with full_mesh(procs) as nodes:
        wait_all_exit(nodes, timeout=900)
        sent = [int(n.final_metrics()["bytes_out"]) for n in nodes]
        contributors = [max(int(r["contributors"]) for r in n.committed()) for n in nodes]
        evals = [{r["tag"]: float(r["loss"]) for r in n.events("eval")} for n in nodes]
        start = sum(e["start"] for e in evals) / NODES
        final = sum(e["final"] for e in evals) / NODES
        return sent, contributors, start, final, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full = run(Path(tmp) / "full", args.rounds, 1)
        sharded = run(Path(tmp) / "sharded", args.rounds, 2)
    for name, (sent, contributors, start, final, wall) in (
        ("whole model", full),
        ("2 layer shards", sharded),
    ):
        per_round = sum(sent) / len(sent) / args.rounds
        print(
            f"{name:<15} bytes sent per node per round {per_round / 1e3:9.1f} kB, most "
            f"contributors in a round {contributors}, held-out loss {start:.4f} -> {final:.4f}, "
            f"{wall:.0f} s"
        )
    ratio = sum(sharded[0]) / sum(full[0])
    print(f"2 layer shards / whole model bytes per round: {ratio:.2%} (model: 1/6 = 16.7%)")


if __name__ == "__main__":
    main()
