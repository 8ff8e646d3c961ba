"""Head-to-head with Flower on Flower's own task: updates/s and held-out accuracy, one run.

The task (scenarios/flower-task.yaml): each client holds 200 Gaussian-mixture samples (32
features, 10 classes) and trains a logistic regression (32 -> 10) for 1 local epoch at batch 32
(7 SGD steps, lr 0.1); FedAvg over all clients; 5 rounds; held-out accuracy of the global model.

Why both sides see the same bytes: the clients' shards, the held-out set and the initial
weights are built ONCE by the sim's own task code (``BatchedLearning``) and handed to the
Flower run as an .npz, so an accuracy gap is the engines', not the data's. Flower's clients
train with numpy (its venv has no torch; numpy is at least as fast as torch for a 32 x 10
model, so this favours Flower) and shuffle their 200 samples into 7 batches per epoch (the
last one of 8), as a Flower quickstart does; the sim draws 7 x 32 samples with replacement.

Flower runs in a throwaway venv (NOT a project dependency):
    python -m venv /tmp/flwr-venv && /tmp/flwr-venv/bin/pip install 'flwr[simulation]==1.42.*'
with its Ray backend at 1 CPU per client (2 actors on a 2-core box; its default of 2 CPUs
would leave one). Each side runs in its own child process, one after the other, and reports
wall and CPU seconds; "steady" updates/s excludes start-up and the first round (Ray actors'
warm-up; the sim's world building and first flush), i.e. N x 4 / time(rounds 2..5).

Sim modes: ``flat`` is the exact FedAvg (every node averages every node's update, N(N-1)
messages per round); ``gossip`` (view 24, fan-out 4) is the mode the simulator scales with.

Goal (issue 19): sim steady updates/s >= 100x Flower's at 1,000 and 5,000 nodes, held-out
accuracy after 5 rounds within 2 points of Flower's.

Usage: python benchmarks/bench_flower.py [--nodes 1000,5000] [--flower-nodes 1000]
           [--modes gossip,flat] [--flat-max 1000] [--flower-python /tmp/flwr-venv/bin/python]
           [--timebox 900]
"""

from __future__ import annotations

import argparse
import json
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "scenarios" / "flower-task.yaml"
ROUNDS = 5
GOAL_RATIO = 100.0
GOAL_ACC_POINTS = 2.0
FLOWER_PYTHON = "/tmp/flwr-venv/bin/python"

FLOWER_CHILD = r"""
import json, sys, time
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

PATH, N, ROUNDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
T0, C0 = time.perf_counter(), time.process_time()
_CACHE = {}

def data():
    if not _CACHE:
        _CACHE.update(np.load(PATH))
    return _CACHE

def softmax_grad(x, y, w, b):
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return x.T @ p, p.sum(axis=0)

client = ClientApp()

@client.train()
def train(msg, context):
    d = data()
    pid = int(context.node_config["partition-id"])
    w, b = (a.copy() for a in msg.content["arrays"].to_numpy_ndarrays())
    x, y = d["x"][pid], d["y"][pid]
    rnd = int(msg.content["config"]["server-round"])
    order = np.random.default_rng(pid * 1000 + rnd).permutation(len(x))
    for s in range(0, len(x), 32):  # one epoch: 7 steps for 200 samples
        i = order[s:s + 32]
        gw, gb = softmax_grad(x[i], y[i], w, b)
        w -= 0.1 * gw
        b -= 0.1 * gb
    content = RecordDict({"arrays": ArrayRecord([w, b]),
                          "metrics": MetricRecord({"num-examples": len(x)})})
    return Message(content=content, reply_to=msg)

server = ServerApp()
marks = []

def central(rnd, arrays):
    d = data()
    w, b = arrays.to_numpy_ndarrays()
    acc = float(((d["ex"] @ w + b).argmax(1) == d["ey"]).mean())
    marks.append({"round": rnd, "wall": time.perf_counter() - T0,
                  "cpu": time.process_time() - C0, "acc": acc})
    print(json.dumps(marks[-1]), flush=True)
    return MetricRecord({"accuracy": acc})

@server.main()
def main(grid, context):
    d = data()
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=N,
                      min_available_nodes=N)
    strategy.start(grid=grid, initial_arrays=ArrayRecord([d["w"], d["b"]]),
                   num_rounds=ROUNDS, evaluate_fn=central)

run_simulation(server_app=server, client_app=client, num_supernodes=N,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                               # a fresh Ray on loopback, as sim/ray_ship.init_target: not a
                               # leftover cluster, and 127.0.0.2 because Ray rewrites 127.0.0.1
                               # to the first interface's address
                               "init_args": {"address": "local",
                                             "_node_ip_address": "127.0.0.2"}})
print(json.dumps({"done": True, "wall": time.perf_counter() - T0,
                  "cpu": time.process_time() - C0}), flush=True)
"""

SIM_CHILD = r"""
import json, resource, sys, time
import yaml
from swarm_tune.sim.scenario import scenario_from_data
from swarm_tune.sim.driver import SimDriver
path, nodes, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = yaml.safe_load(open(path).read())
data["nodes"]["count"] = nodes
if mode == "gossip":
    data["protocol"].update(strategy="gossip", view_size=24, gossip_fanout=4, quorum=0.6)
    data.setdefault("rounds", {})["bootstrap_peers"] = 12
s = scenario_from_data(data)
t0, c0 = time.perf_counter(), time.process_time()
def progress(r, target, now):
    print(json.dumps({"round": r, "wall": time.perf_counter() - t0,
                      "cpu": time.process_time() - c0}), flush=True)
drv = SimDriver(s, progress=progress)
res = drv.run()
sw = drv.rec.tables()["swarm"].to_pandas().dropna(subset=["eval_acc_mean_model"])
acc = {int(r): float(a) for r, a in zip(sw["round"], sw["eval_acc_mean_model"])}
print(json.dumps({"done": True, "wall": time.perf_counter() - t0,
                  "cpu": time.process_time() - c0, "acc": acc, "stop": res.stop_reason,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
      flush=True)
"""


def run_child(cmd: list[str], timeout: float) -> tuple[list[dict[str, Any]], bool]:
    """Run ``cmd``, collecting its JSON lines (others are echoed to stderr); (lines, done?)."""
    lines: list[dict[str, Any]] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, min(5.0, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # Flower's own log lines
            if lines[-1].get("done"):
                break
        done = bool(lines and lines[-1].get("done"))
        if not done:
            proc.kill()
        proc.wait()
    return lines, done


def export_task(nodes: int, out: Path) -> None:
    """The sim's own shards, held-out set and initial weights for the Flower clients."""
    import numpy as np
    import yaml

    from swarm_tune.sim.learning import BatchedLearning
    from swarm_tune.sim.scenario import scenario_from_data

    data = yaml.safe_load(TASK.read_text())
    data["nodes"]["count"] = nodes
    s = scenario_from_data(data)
    bl = BatchedLearning(s.learning, nodes, s.seed)
    for i in range(nodes):
        bl.add_node(i, i)
    idx = [bl.shard_samples(i) for i in range(nodes)]
    x = np.stack([bl.data.features[i].numpy() for i in idx])
    y = np.stack([bl.data.labels[i].numpy() for i in idx])
    named = bl.named(bl.parameters(0)["params"])
    np.savez(
        out,
        x=x,
        y=y,
        ex=bl.data.eval.inputs[0].numpy(),
        ey=bl.data.eval.targets[0].numpy(),
        w=named["w1"].numpy().copy(),
        b=named["b1"].numpy().copy(),
    )


def steady(lines: list[dict[str, Any]], nodes: int) -> tuple[float | None, float | None]:
    """(updates/s wall, updates/s cpu) over rounds 2..5 (N x 4 updates / their time)."""
    marks = {int(ln["round"]): ln for ln in lines if "round" in ln}
    if 1 not in marks or ROUNDS not in marks:
        return None, None
    a, b = marks[1], marks[ROUNDS]
    n = nodes * (ROUNDS - 1)
    return n / max(1e-9, b["wall"] - a["wall"]), n / max(1e-9, b["cpu"] - a["cpu"])


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


@dataclass(frozen=True)
class Outcome:
    """One side's run: steady updates/s (wall, cpu), accuracy after ROUNDS, times."""

    label: str
    nodes: int
    done: bool
    rate: float | None
    cpu_rate: float | None
    acc: float | None
    wall: float | None
    cpu: float | None
    rss_mb: float | None = None


def measure_flower(nodes: int, python: str, timebox: float) -> Outcome:
    """Flower's simulation engine on the sim's own data (see module doc)."""
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "task.npz"
        export_task(nodes, npz)
        cmd = [python, "-c", FLOWER_CHILD, str(npz), str(nodes), str(ROUNDS)]
        lines, done = run_child(cmd, timebox)
    marks = [ln for ln in lines if "round" in ln]
    rate, cpu_rate = steady(lines, nodes)
    acc = marks[-1]["acc"] if marks and marks[-1]["round"] == ROUNDS else None
    last = lines[-1] if lines else {}
    label = f"Flower 1.42 (Ray, 1 CPU/client), {nodes:,} clients"
    return Outcome(label, nodes, done, rate, cpu_rate, acc, last.get("wall"), last.get("cpu"))


def measure_sim(nodes: int, mode: str, timebox: float) -> Outcome:
    """The simulator on scenarios/flower-task.yaml at ``nodes``, ``flat`` or ``gossip``."""
    cmd = [sys.executable, "-c", SIM_CHILD, str(TASK), str(nodes), mode]
    lines, done = run_child(cmd, timebox)
    rate, cpu_rate = steady(lines, nodes)
    last = lines[-1] if lines else {}
    acc = last.get("acc", {}).get(str(ROUNDS)) if done else None
    label = f"sim {mode}, {nodes:,} nodes"
    return Outcome(
        label,
        nodes,
        done,
        rate,
        cpu_rate,
        acc,
        last.get("wall"),
        last.get("cpu"),
        last.get("rss_mb"),
    )


def report(side: Outcome, flower: Outcome | None) -> str:
    """One line: figures, the ratio to Flower's steady rate, the accuracy gap, the goals."""
    head = (
        f"{side.label}: {'finished' if side.done else 'NOT finished'}, wall "
        f"{fmt(side.wall, '.0f')} s (cpu {fmt(side.cpu, '.0f')} s); steady "
        f"{fmt(side.rate)} updates/s (cpu-based {fmt(side.cpu_rate)}); accuracy after "
        f"{ROUNDS} rounds {fmt(side.acc, '.4f')}"
    )
    if side.rss_mb is not None:
        head += f"; RSS {side.rss_mb:,.0f} MB"
    if flower is None or side is flower:
        return head
    ratio = side.rate / flower.rate if side.rate and flower.rate else None
    gap = 100 * abs(side.acc - flower.acc) if side.acc is not None and flower.acc else None
    verdict = "-"
    if ratio is not None and gap is not None:
        verdict = "met" if ratio >= GOAL_RATIO and gap <= GOAL_ACC_POINTS else "NOT met"
    return (
        f"{head}\n    ratio vs Flower {fmt(ratio, '.1f')}x (goal >= {GOAL_RATIO:.0f}x); "
        f"accuracy gap {fmt(gap, '.1f')} points (goal <= {GOAL_ACC_POINTS:.0f}): "
        f"{verdict}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="1000,5000", help="sim sizes, comma-separated")
    ap.add_argument("--flower-nodes", type=int, default=1000)
    ap.add_argument("--modes", default="gossip,flat")
    ap.add_argument("--flat-max", type=int, default=1000, help="largest size run flat (N^2)")
    ap.add_argument("--flower-python", default=FLOWER_PYTHON)
    ap.add_argument("--timebox", type=float, default=900.0, help="seconds per child run")
    ap.add_argument("--skip-flower", action="store_true")
    args = ap.parse_args()
    print(f"== Flower's task, {ROUNDS} rounds (goal: sim >= {GOAL_RATIO:.0f}x Flower's steady")
    print(f"   updates/s, held-out accuracy within {GOAL_ACC_POINTS:.0f} points of Flower's) ==")
    flower: Outcome | None = None
    if not args.skip_flower and Path(args.flower_python).exists():
        flower = measure_flower(args.flower_nodes, args.flower_python, args.timebox)
        print(report(flower, None))
    else:
        print(f"Flower: not run ({args.flower_python} missing or --skip-flower)")
    sys.stdout.flush()
    for n in [int(v) for v in args.nodes.split(",")]:
        for mode in args.modes.split(","):
            if mode == "flat" and n > args.flat_max:
                print(f"sim flat, {n:,} nodes: skipped (> --flat-max {args.flat_max:,})")
                continue
            print(report(measure_sim(n, mode, args.timebox), flower))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
