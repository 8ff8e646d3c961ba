"""Benchmark (a), real-runtime confirmation: 3 ``swarm-tune node`` processes on loopback.

The simulator's bytes-to-loss table (bench_diloco.py) is the measurement; this run checks that
the real node moves what the sim charges: the same inner-step budget (``--steps`` per node) as
per-step flat FedAvg (one round per step, raw fp32) and as DiLoCo (H = ``--h`` steps per
round, int8 pseudo-gradients on the wire). Printed per run: bytes each node sent (the net
driver's own counter: every frame, heartbeats and control included), the held-out loss at the
end (the node's own ``final`` evaluation), wall time; then the byte ratio beside the ideal
one (H x int8's compression) and the loss difference.

    nice .venv/bin/python benchmarks/bench_diloco_real.py [--steps 20] [--h 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from procs import NodeProc, bench_env, free_port, full_mesh, wait_all_exit  # type: ignore[import-not-found]

NODES = 3


def run(workdir: Path, rounds: int, extra: dict[str, str]) -> tuple[list[int], list[float], float]:
    env = bench_env(rounds, SWARM_PARAM_SYNC_EVERY="0", **extra)
    t0 = time.perf_counter()
    with full_mesh([NodeProc(i, free_port(), workdir, env) for i in range(NODES)]) as nodes:
        wait_all_exit(nodes, timeout=900)
        sent = [int(n.final_metrics()["bytes_out"]) for n in nodes]
        losses = [float(r["loss"]) for n in nodes for r in n.events("eval") if r["tag"] == "final"]
        return sent, losses, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="inner steps per node, both runs")
    ap.add_argument("--h", type=int, default=10, help="DiLoCo inner steps per round")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = run(Path(tmp) / "flat", args.steps, {})
        dil = run(
            Path(tmp) / "diloco",
            args.steps // args.h,
            {"SWARM_DILOCO_INNER_STEPS": str(args.h), "SWARM_COMPRESSION": "int8"},
        )
    for name, (sent, losses, wall) in (("flat per-step / none", base), ("DiLoCo / int8", dil)):
        mean_loss = sum(losses) / len(losses)
        print(
            f"{name:<22} bytes sent per node {sum(sent) / len(sent) / 1e6:8.2f} MB "
            f"(min {min(sent) / 1e6:.2f}, max {max(sent) / 1e6:.2f}), final held-out loss "
            f"{mean_loss:.4f}, {wall:.0f} s"
        )
    ratio = sum(base[0]) / sum(dil[0])
    ideal = args.h * 4 / (1 + 4 / 256)
    loss_b = sum(base[1]) / len(base[1])
    loss_d = sum(dil[1]) / len(dil[1])
    print(
        f"bytes ratio {ratio:.1f}x (payload-only ideal H x int8 = {ideal:.1f}x; heartbeats and "
        f"control frames are the difference), final loss DiLoCo vs flat "
        f"{100 * (loss_d / loss_b - 1):+.1f}%"
    )


if __name__ == "__main__":
    main()
