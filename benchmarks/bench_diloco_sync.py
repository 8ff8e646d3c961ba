"""What a DiLoCo joiner must copy: parameters only, + outer momentum, + inner AdamW state?

Measured on the sim's surrogate (4 nodes, H = 10, everyone averages with everyone). After
``--before`` rounds node 3 is replaced by a fresh joiner (zero inner and outer state) that
copies node 0's parameters, and, per variant, node 0's outer momentum and inner Adam state.
Then ``--after`` more rounds run. Printed per variant: the joiner's relative parameter
distance to node 0 (replica agreement: 0 means bit-identical) and the held-out loss of the
mean model, against the baseline where nobody left (same run, same data).

    nice .venv/bin/python benchmarks/bench_diloco_sync.py
"""

from __future__ import annotations

import argparse

import torch

from swarm_tune.sim.learning import PARAMS, BatchedLearning, LearningSettings
from swarm_tune.sim.learning_settings import DiLoCoSettings

NODES = 4
JOINER = 3


def _round(bl: BatchedLearning) -> None:
    for i in range(NODES):
        bl.request(i, "grad")
    res = bl.flush()
    avg = torch.stack([res[i].update[PARAMS] for i in range(NODES)]).mean(0)
    for i in range(NODES):
        bl.apply_average(i, "grad", {PARAMS: avg})


def run(variant: str, before: int, after: int) -> tuple[float, float]:
    s = LearningSettings(
        hidden=64, embed=16, context=8, batch_size=32, samples_per_node=20000,
        eval_samples=1024, lr=0.003, diloco=DiLoCoSettings(inner_steps=10),
    )  # fmt: skip
    bl = BatchedLearning(s, NODES, 1)
    for i in range(NODES):
        bl.add_node(i, i)
    for _ in range(before):
        _round(bl)
    if variant != "nobody left":
        bl.settle()
        with torch.no_grad():  # a fresh joiner: no inner, no outer state
            for t in (bl._m, bl._v, bl._outer_b):
                t[JOINER].zero_()
            bl._steps[JOINER] = 0
        bl.load_state(JOINER, bl.parameters(0))
        if variant != "params only":
            bl.load_outer_state(JOINER, bl.outer_state(0))
        if variant == "params + outer + inner":
            for t in (bl._m, bl._v):
                t[JOINER] = t[0]
            bl._steps[JOINER] = bl._steps[0]
    for _ in range(after):
        _round(bl)
    p0, pj = bl.parameters(0)[PARAMS], bl.parameters(JOINER)[PARAMS]
    return float((pj - p0).norm() / p0.norm()), bl.mean_eval_loss(range(NODES))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=int, default=20)
    ap.add_argument("--after", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{NODES} nodes, H=10, joiner after {args.before} rounds, {args.after} rounds after")
    _, base = run("nobody left", args.before, args.after)
    print(f"{'variant':<26} {'joiner vs node 0':>17} {'mean-model loss':>16} {'vs baseline':>12}")
    for v in ("nobody left", "params only", "params + outer", "params + outer + inner"):
        dist, loss = run(v, args.before, args.after)
        print(f"{v:<26} {dist:>17.2e} {loss:>16.4f} {100 * (loss / base - 1):>+11.2f}%")


if __name__ == "__main__":
    main()
