"""Partitioned runs (sim/pdes.py): do K partitions give the same tables, how fast on Ray, and
how far is the partition-local model from the single world's?

Three measurements of one scenario (nodes and rounds overridable), each run once, in order:

1. **invariance** (goal: identical): the partition-local model in one world (K = 1, this
   process) against K partitions in this process and, with ``--ray``, K Ray actors on a local
   Ray started for the run (one CPU each). Digests of the rounds, swarm (less wall_s),
   rejections and events tables must all match.
2. **speed** (goal: K Ray actors faster than one world; informative on a shared 2-core box):
   wall seconds of the K = 1 run against the Ray run (Ray's start, ~10-30 s here, is timed
   apart and not counted), with the number of windows (one Ray round trip each).
3. **divergence** from the single-process model (goal: none set: a figure to read): the
   single world (``parts = 0``) against K = 1 on the same seed: virtual time to the target,
   mean and median round duration, messages, held-out loss and accuracy of the swarm's average
   model per evaluated swarm round.

Usage: python benchmarks/bench_pdes.py [--scenario scenarios/churn-30.yaml] [--nodes 100]
           [--rounds 20] [--parts 2] [--ray]
Run under the shared lock on this box: flock /work/notes/bench.lock nice python ...
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from swarm_tune.sim.recorder import WALL_CLOCK_COLUMNS
from swarm_tune.sim.runner import RunOutput, run_scenario
from swarm_tune.sim.scenario import Scenario, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]


def _scenario(path: Path, nodes: int | None, rounds: int | None) -> Scenario:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if nodes is not None:
        data["nodes"]["count"] = nodes
    if rounds is not None:
        data["rounds"]["target"] = rounds
    return scenario_from_data(data)


def _digest(out: RunOutput) -> str:
    h = hashlib.sha256()
    for name, table in sorted(out.result.recorder.tables().items()):
        drop = [c for c in WALL_CLOCK_COLUMNS.get(name, ()) if c in table.column_names]
        frame = table.drop_columns(drop).to_pandas()
        h.update(name.encode() + frame.to_csv(index=False).encode())
    return h.hexdigest()[:16]


def _timed(s: Scenario, **kw: Any) -> tuple[RunOutput, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = run_scenario(s, write=False, **kw)
    return out, time.perf_counter() - w0, time.process_time() - c0


def _summary(out: RunOutput) -> dict[str, Any]:
    tables = out.result.recorder.tables()
    rounds = tables["rounds"].to_pandas()
    swarm = tables["swarm"].to_pandas()
    evaluated = swarm.dropna(subset=["eval_loss_mean_model"])
    return {
        "virtual_s": out.result.virtual_s,
        "round_mean_s": float(rounds["duration"].mean()),
        "round_median_s": float(rounds["duration"].median()),
        "rows": len(rounds),
        "averaged": float((rounds["outcome"] == "average").mean()),
        # The swarm table's counter is read at a boundary in a partitioned run (before that
        # instant's events): the rounds rows say what was sent.
        "messages": int(swarm["messages"].iloc[-1]),
        "msgs_sent": int(rounds["msgs_sent"].sum()),
        "curve": [
            (int(r), float(loss), float(acc))
            for r, loss, acc in zip(
                evaluated["round"],
                evaluated["eval_loss_mean_model"],
                evaluated["eval_acc_mean_model"],
                strict=True,
            )
        ],
    }


def _windows(out: RunOutput) -> int:
    window = out.manifest.get("partition_window_s", math.nan)
    return round(out.result.virtual_s / window) if window == window else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "churn-30.yaml")
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--parts", type=int, default=2)
    ap.add_argument("--ray", action="store_true")
    args = ap.parse_args()
    s = _scenario(args.scenario, args.nodes, args.rounds)
    print(f"{s.name}: {s.total_nodes} nodes, {s.rounds.target} rounds, load {os.getloadavg()}")

    print("\n1. invariance (goal: every digest equal)")
    one, w1, c1 = _timed(s, parts=1)
    print(f"  K=1 local:  {_digest(one)}  wall {w1:.1f} s  cpu {c1:.1f} s  windows {_windows(one)}")
    many, wk, ck = _timed(s, parts=args.parts)
    same = _digest(many) == _digest(one)
    print(f"  K={args.parts} local:  {_digest(many)}  wall {wk:.1f} s  cpu {ck:.1f} s  same={same}")
    if args.ray:
        import ray

        w0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.parts, include_dashboard=False)
        ray.shutdown()
        start = time.perf_counter() - w0
        on_ray, wr, cr = _timed(s, parts=args.parts, ray=True)
        same_ray = _digest(on_ray) == _digest(one)
        print(
            f"  K={args.parts} Ray:    {_digest(on_ray)}  wall {wr:.1f} s (a bare Ray start "
            f"alone: {start:.1f} s)  coordinator cpu {cr:.1f} s  same={same_ray}"
        )
        print("\n2. speed (goal: K=1 wall / Ray wall > 1)")
        print(
            f"  K=1 {w1:.1f} s / K={args.parts} on Ray {wr:.1f} s = {w1 / wr:.2f}x; less Ray's "
            f"start: {w1 / max(1e-9, wr - start):.2f}x; load {os.getloadavg()}"
        )

    print("\n3. divergence from the single world (no goal: the model's cost in fidelity)")
    single, w0_, _ = _timed(s)
    a, b = _summary(single), _summary(one)
    keys = ("virtual_s", "round_mean_s", "round_median_s", "rows", "averaged", "messages")
    for key in (*keys, "msgs_sent"):
        ratio = b[key] / a[key] if a[key] else math.nan
        print(f"  {key:15s} single {a[key]:12.4g}  partition-local {b[key]:12.4g}  x{ratio:.3f}")
    print("  eval (round: single loss/acc | partition-local loss/acc)")
    curve_b = {r: (loss, acc) for r, loss, acc in b["curve"]}
    for r, loss, acc in a["curve"]:
        lb, ab = curve_b.get(r, (math.nan, math.nan))
        print(f"    {r:4d}: {loss:.4f} / {acc:.3f} | {lb:.4f} / {ab:.3f}")
    print(f"  single world wall {w0_:.1f} s vs K=1 {w1:.1f} s; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
