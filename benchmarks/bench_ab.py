"""A/B: the simulator of a git ref (A, e.g. main before a change) vs this tree (B), same run.

Why: this box is shared and its load swings several-fold within minutes, so a speed-up is only
believable as a ratio of runs interleaved in one session (A B A B ...), each a fresh child
process, with CPU seconds beside the wall seconds (the run is single-threaded: CPU s is what an
idle machine would need). And a speed-up must not change what the simulator computes: every
run prints a digest of its rounds table, and the digests of A and B must be identical (same
seed, same scenario, same rounds - determinism is the simulator's contract).

A is ``git archive REF`` unpacked into a temporary folder (with its ``.pkg`` import links), so
the children import ``swarm_tune`` from A's or B's files.

Usage: python benchmarks/bench_ab.py [--ref main] [--b-ref REF]
           [--scenario scenarios/flower-task.yaml] [--nodes 300] [--rounds 5]
           [--strategy flat|gossip|asis] [--pairs 2] [--goal-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, sys, time
import yaml
from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import scenario_from_data

path, nodes, rounds, strategy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = yaml.safe_load(open(path).read())
data["nodes"]["count"] = nodes
data["rounds"]["target"] = rounds
if strategy == "gossip":  # the mode the simulator scales with, as bench_flower runs it
    data["protocol"].update(strategy="gossip", view_size=24, gossip_fanout=4, quorum=0.6)
elif strategy == "flat":
    data["protocol"].update(strategy="flat", view_size=0)
t0, c0 = time.perf_counter(), time.process_time()
drv = SimDriver(scenario_from_data(data))
drv.run()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rounds_table = drv.rec.tables()["rounds"].to_pandas()
digest = hashlib.sha256(rounds_table.to_csv(index=False).encode()).hexdigest()[:16]
print(json.dumps({"wall": wall, "cpu": cpu, "digest": digest, "rows": len(rounds_table)}))
"""


def unpack(ref: str, into: Path) -> None:
    """``ref``'s tracked files under ``into``, importable through a copy of ``.pkg``."""
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    if not (into / ".pkg").exists():  # tracked in this repository; copied if a ref lacks it
        shutil.copytree(ROOT / ".pkg", into / ".pkg", symlinks=True)


def run_child(tree: Path, args: argparse.Namespace) -> dict[str, float | str]:
    env = dict(os.environ, PYTHONPATH=str(tree / ".pkg"))
    scenario = str((ROOT / args.scenario).resolve())
    cmd = [sys.executable, "-c", CHILD, scenario, str(args.nodes), str(args.rounds)]
    out = subprocess.run(
        [*cmd, args.strategy], capture_output=True, text=True, check=True, env=env, cwd=tree
    )
    result: dict[str, float | str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


Runs = dict[str, list[dict[str, float | str]]]


def report(runs: Runs) -> dict[str, tuple[float, float]]:
    """Print the medians of A and B (wall, CPU), B/A, and whether every run's rounds table
    was the same; return the medians by variant."""
    med = {
        v: (
            statistics.median(float(r["wall"]) for r in rs),
            statistics.median(float(r["cpu"]) for r in rs),
        )
        for v, rs in runs.items()
    }
    same = len({r["digest"] for rs in runs.values() for r in rs}) == 1
    print(
        f"median A: wall {med['A'][0]:.1f} s, cpu {med['A'][1]:.1f} s; median B: wall "
        f"{med['B'][0]:.1f} s, cpu {med['B'][1]:.1f} s"
    )
    print(
        f"median B/A: wall {med['B'][0] / med['A'][0]:.2f}, cpu {med['B'][1] / med['A'][1]:.2f} "
        f"(goal < 1); rounds tables identical across all runs: {same} (goal True)"
    )
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="main", help="git ref of A")
    ap.add_argument("--b-ref", default="", help="git ref of B (default: this working tree)")
    ap.add_argument("--scenario", default="scenarios/flower-task.yaml")
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--strategy", default="flat", choices=["flat", "gossip", "asis"])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--goal-s", type=float, default=0.0, help="print B's CPU s against it")
    args = ap.parse_args()
    runs: Runs = {"A": [], "B": []}
    print(
        f"== {args.scenario}, {args.strategy}, {args.nodes} nodes x {args.rounds} rounds: "
        f"A = {args.ref}, B = {args.b_ref or 'this tree'} =="
    )
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        base, other = Path(tmp) / "a", Path(tmp) / "b"
        base.mkdir()
        unpack(args.ref, base)
        if args.b_ref:  # a frozen B: the working tree may change while a long A/B runs
            other.mkdir()
            unpack(args.b_ref, other)
        for i in range(args.pairs):
            for variant, tree in (("A", base), ("B", other if args.b_ref else ROOT)):
                r = run_child(tree, args)
                runs[variant].append(r)
                print(
                    f"pair {i} {variant}: wall {float(r['wall']):.1f} s, cpu "
                    f"{float(r['cpu']):.1f} s, rounds table {r['digest']} ({r['rows']} rows)",
                    flush=True,
                )
    med = report(runs)
    if args.goal_s:
        verdict = "met" if med["B"][1] <= args.goal_s else "NOT met"
        print(f"B's median cpu {med['B'][1]:.1f} s vs goal <= {args.goal_s:.0f} s: {verdict}")


if __name__ == "__main__":
    main()
