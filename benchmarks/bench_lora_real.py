"""LoRA on the real runtime: 3 ``swarm-tune node`` processes on loopback, adapters vs full.

Two runs of the same rounds on tiny-llama: full fine-tuning (every parameter on the wire) and
``SWARM_PEFT=lora`` (rank 4 on q_proj/v_proj: only the adapters train and travel). Printed per
run: bytes each node sent per round (the net driver's own counter: every frame, heartbeats
and control included), the held-out loss at start and end (the node's own evaluations);
then the LoRA/full byte ratio beside the goal (<= 5%, issue 16).

    nice .venv/bin/python benchmarks/bench_lora_real.py [--rounds 6]
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
LORA = {
    "SWARM_PEFT": "lora",
    "SWARM_LORA_RANK": "4",
    "SWARM_LORA_ALPHA": "8",
    "SWARM_LORA_TARGET_MODULES": "q_proj,v_proj",
    "SWARM_LEARNING_RATE": "0.05",
}


def run(workdir: Path, rounds: int, extra: dict[str, str]) -> tuple[list[int], float, float, float]:
    env = bench_env(rounds, SWARM_MODEL_NAME="tiny-llama", **extra)
    t0 = time.perf_counter()
    with full_mesh([NodeProc(i, free_port(), workdir, env) for i in range(NODES)]) as nodes:
        wait_all_exit(nodes, timeout=900)
        sent = [int(n.final_metrics()["bytes_out"]) for n in nodes]
        evals = [{r["tag"]: float(r["loss"]) for r in n.events("eval")} for n in nodes]
        start = sum(e["start"] for e in evals) / NODES
        final = sum(e["final"] for e in evals) / NODES
        return sent, start, final, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full = run(Path(tmp) / "full", args.rounds, {})
        lora = run(Path(tmp) / "lora", args.rounds, LORA)
    for name, (sent, start, final, wall) in (("full fine-tuning", full), ("LoRA r4 q,v", lora)):
        per_round = sum(sent) / len(sent) / args.rounds
        print(
            f"{name:<17} bytes sent per node per round {per_round / 1e3:9.1f} kB, held-out loss "
            f"{start:.4f} -> {final:.4f}, {wall:.0f} s"
        )
    ratio = sum(lora[0]) / sum(full[0])
    print(f"LoRA / full bytes per round: {ratio:.2%} (goal <= 5%)")


if __name__ == "__main__":
    main()
