"""Partitioned runs' memory: does a partition hold only its share of the world?

A world too big for one machine only fits across machines if each partition holds its own
nodes' heavy state (learning rows, optimizer state, protocol cores) and not everyone's. Two
measurements of one scenario (nodes and rounds overridable):

1. **built** (cheap, default): in a fresh process per figure, partition 0 of K = 1 and of
   K = ``--parts`` is built (every own core started, every own row allocated, before the first
   window): its RSS growth over the imports (``ru_maxrss``) and its engine's bytes.
2. **run on Ray** (``--ray``; a Ray start is 10-30 s here): the scenario run with K = 1 (one
   actor holds the whole world) and K = ``--parts`` actors; each actor's peak RSS read inside
   it after the run, against a bare actor (a Ray worker that imported the simulator).

Goal: the largest partition's growth is about 1/K of the K = 1 world's (the light per-node
records every partition keeps make it a little more); the engine bytes split exactly.

Usage: python benchmarks/bench_pdes_memory.py [--scenario scenarios/scale-10k.yaml]
           [--nodes 3000] [--rounds 2] [--parts 2] [--ray]
Run under the shared lock on this box: flock /work/notes/bench.lock nice python ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from swarm_tune.sim.learning import BatchedLearning
from swarm_tune.sim.pdes import Coordinator, PartActor, RayParts
from swarm_tune.sim.pdes_world import PartWorld, quiet
from swarm_tune.sim.scenario import Scenario, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _scenario(path: Path, nodes: int, rounds: int) -> Scenario:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["nodes"]["count"] = nodes
    data["rounds"]["target"] = rounds
    return scenario_from_data(data)


def _built(path: Path, nodes: int, parts: int) -> dict[str, int]:
    """Partition 0 of ``parts``, built in a fresh process: RSS growth, engine bytes, cores."""
    cmd = [sys.executable, __file__, "--child", str(parts), "--scenario", str(path)]
    cmd += ["--nodes", str(nodes)]
    got: dict[str, int] = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
    return got


def _child(s: Scenario, parts: int) -> None:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with quiet():
        world = PartWorld(s, 0, parts)
    engine = world.engine
    held = engine.state_bytes() if isinstance(engine, BatchedLearning) else -1
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    cores = sum(n.proto is not None for n in world.nodes)
    print(json.dumps({"grown": grown, "engine": held, "cores": cores}))


def _memory(actor: PartActor) -> tuple[int, int]:
    """Inside the actor: its peak RSS (Linux ru_maxrss is KiB) and its engine's bytes."""
    engine = actor.world.engine
    held = engine.state_bytes() if isinstance(engine, BatchedLearning) else -1
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, held


def _run(s: Scenario, parts: int) -> tuple[list[tuple[int, int]], float, int]:
    """Peak RSS and engine bytes per actor, wall seconds, and swarm rows of one run."""
    w0 = time.perf_counter()
    with quiet():
        backend = RayParts(s, parts)
        try:
            result = Coordinator(s, backend, None).run()
            got: list[tuple[int, int]] = backend._ray.get(
                [a.__ray_call__.remote(_memory) for a in backend.actors]
            )
        finally:
            backend.close()
    return got, time.perf_counter() - w0, result.recorder.tables()["rounds"].num_rows


def _bare_actor() -> int:
    """A Ray worker that imported what an actor imports, holding no world."""
    import ray

    from swarm_tune.sim import ray_ship

    with quiet(), tempfile.TemporaryDirectory(prefix="swarm-ship-") as tmp:
        stage = ray_ship.stage(Path(tmp))
        ray.init(
            address="local",
            num_cpus=1,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=ray_ship.runtime_env(stage),
        )
        try:

            @ray.remote(num_cpus=1)
            class Bare:
                def peak(self) -> int:
                    import swarm_tune.sim.pdes  # noqa: F401  (what a partition imports)

                    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

            actor: Any = Bare.remote()  # type: ignore[attr-defined]
            peak = int(ray.get(actor.peak.remote()))
        finally:
            ray.shutdown()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "scale-10k.yaml")
    ap.add_argument("--nodes", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--parts", type=int, default=2)
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    s = _scenario(args.scenario, args.nodes, args.rounds)
    if args.child:
        _child(s, args.child)
        return
    print(f"{s.name}: {s.total_nodes} nodes, {s.rounds.target} rounds, load {os.getloadavg()}")
    print("\n1. built (partition 0, before the first window)")
    one = _built(args.scenario, args.nodes, 1)
    many = _built(args.scenario, args.nodes, args.parts)
    for k, got in ((1, one), (args.parts, many)):
        print(
            f"  K={k}: grew {got['grown'] / MIB:.0f} MiB, engine {got['engine'] / MIB:.1f} MiB, "
            f"{got['cores']} cores"
        )
    print(
        f"  goal ~1/{args.parts} = {1 / args.parts:.2f}: {many['grown'] / one['grown']:.2f} of "
        f"the world; engine {many['engine'] / one['engine']:.2f}; load {os.getloadavg()}"
    )
    if args.ray:
        _on_ray(s, args.parts)


def _on_ray(s: Scenario, parts: int) -> None:
    print("\n2. run on Ray (peak RSS per actor, after the run)")
    bare = _bare_actor()
    print(f"  bare actor (imports only): peak {bare / MIB:.0f} MiB")
    one, w1, rows1 = _run(s, 1)
    many, wk, rowsk = _run(s, parts)
    ((peak1, held1),) = one
    print(f"  K=1: peak {peak1 / MIB:.0f} MiB, engine {held1 / MIB:.1f} MiB, wall {w1:.0f} s")
    for k, (peak, held) in enumerate(many):
        print(f"  K={parts} part {k}: peak {peak / MIB:.0f} MiB, engine {held / MIB:.1f} MiB")
    print(f"  rounds rows: K=1 {rows1}, K={parts} {rowsk} (same run: must match)")
    top = max(p for p, _ in many)
    print(
        f"  goal ~1/{parts} = {1 / parts:.2f}: largest partition's peak over a bare actor's "
        f"{(top - bare) / (peak1 - bare):.2f} of the world's; engine bytes sum "
        f"{sum(h for _, h in many) / MIB:.1f} vs {held1 / MIB:.1f} MiB; wall K={parts} "
        f"{wk:.0f} s; load {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
