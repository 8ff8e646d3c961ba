"""Cost of the batched learning surrogate: the number that sets the simulator's speed.

Prints, in one run: wall time of one ``flush`` (all nodes ask for a gradient) plus the batched
optimizer step (``settle``) at 100 / 1,000 / 10,000 nodes, the per-node cost against a
baseline measured in the same run (the same nodes stepped ONE AT A TIME through the Learner
path, ``compute_update``), peak RSS, and optionally a loss-curve figure (swarm vs centralised).

    .venv/bin/python benchmarks/bench_learning.py [--sizes 100,1000,10000] [--figure out.png]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from swarm_tune.runtime.protocol.tensors import TensorDict
from swarm_tune.sim.learning import BatchedLearning, LearningSettings, centralized_baseline
from swarm_tune.sim.learning_settings import LearningTask


def _swarm(settings: LearningSettings, n: int, seed: int = 0) -> BatchedLearning:
    bl = BatchedLearning(settings, n, seed)
    for i in range(n):
        bl.add_node(i, i)
    return bl


def _round(bl: BatchedLearning, nodes: list[int]) -> tuple[float, float]:
    """One all-grad round; returns (flush seconds, apply+settle seconds)."""
    t0 = time.perf_counter()
    for i in nodes:
        bl.request(i, "grad")
    res = bl.flush()
    t1 = time.perf_counter()
    for i in nodes:  # each node gets its own (here: its own) update, like a fallback round
        bl.apply_average(i, "grad", res[i].update)
    bl.settle()
    return t1 - t0, time.perf_counter() - t1


def bench_sizes(settings: LearningSettings, sizes: list[int], reps: int) -> None:
    print(
        f"settings: {settings.task} hidden={settings.hidden} batch={settings.batch_size} "
        f"optimizer={settings.optimizer} threads={torch.get_num_threads()}"
    )
    # Baseline: the unbatched Learner path, node by node, measured on 100 nodes.
    base = _swarm(settings, 100)
    base_nodes = list(range(100))
    t0 = time.perf_counter()
    for i in base_nodes:
        base.compute_update(i, "grad")
    per_node_loop = (time.perf_counter() - t0) / 100
    print(f"baseline (one node at a time): {per_node_loop * 1e3:.3f} ms/node")
    for n in sizes:
        t0 = time.perf_counter()
        bl = _swarm(settings, n)
        build = time.perf_counter() - t0
        nodes = list(range(n))
        _round(bl, nodes)  # warm-up
        flushes, settles = [], []
        for _ in range(reps):
            f, s = _round(bl, nodes)
            flushes.append(f)
            settles.append(s)
        f, s = min(flushes), min(settles)
        t0 = time.perf_counter()
        bl.divergence(nodes)
        div = time.perf_counter() - t0
        t0 = time.perf_counter()
        bl.mean_eval_loss(nodes)
        mean_eval = time.perf_counter() - t0
        ratio = per_node_loop / (f / n)
        print(
            f"n={n:>6}: flush {f:.3f}s  apply+settle {s:.3f}s  per node {f / n * 1e6:.1f} us "
            f"({ratio:.1f}x faster than the loop)  divergence {div:.3f}s  "
            f"mean_eval {mean_eval:.3f}s  build {build:.2f}s  state {bl.state_bytes() >> 20} MiB"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")


def figure(path: str, rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    tasks: list[LearningTask] = ["char-lm", "classification"]
    for ax, task in zip(axes, tasks, strict=True):
        s = LearningSettings(task=task, non_iid=0.8)
        for n in (8, 100):
            bl = _swarm(s, n)
            nodes = list(range(n))
            curve = []
            for _ in range(rounds):
                for i in nodes:
                    bl.request(i, "grad")
                res = bl.flush()
                avg: TensorDict = {
                    k: torch.stack([res[i].update[k] for i in nodes]).mean(0) for k in res[0].update
                }
                for i in nodes:
                    bl.apply_average(i, "grad", avg)
                curve.append(bl.mean_eval_loss(nodes))
            ax.plot(curve, label=f"swarm {n} nodes, grad averaging")
            local = _swarm(s, n)
            lcurve = []
            for _ in range(rounds):
                for i in nodes:
                    local.request(i, "params")
                local.flush()
                lcurve.append(local.mean_eval_loss(nodes))
            ax.plot(lcurve, "--", label=f"{n} nodes, no averaging (mean-param model)")
        ax.plot(centralized_baseline(s, 8, rounds, 0), ":", label="centralised (8-node budget)")
        ax.set_title(f"{task}, non_iid=0.8")
        ax.set_xlabel("round")
        ax.set_ylabel("held-out loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    ap.add_argument("--figure", default="")
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = LearningSettings(optimizer=args.optimizer)
    bench_sizes(settings, [int(x) for x in args.sizes.split(",")], args.reps)
    if args.figure:
        figure(args.figure, args.rounds)


if __name__ == "__main__":
    main()
