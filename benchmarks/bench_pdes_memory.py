"""Partitioned runs' memory: does a partition hold only its share of the world?

A world too big for one machine only fits across machines if each partition holds its own
nodes' heavy state (learning rows, optimizer state, protocol cores) and not everyone's. This
runs one scenario (nodes and rounds overridable) twice on a local Ray started for the run:
K = 1 (one actor holds the whole world) and K = ``--parts`` actors, and prints each actor's
peak resident memory (ru_maxrss, read inside the actor after the run) and its learning
engine's stacked-state bytes.

Goal: the largest partition's peak above a bare actor's (a Ray worker that imported the
simulator and torch; measured in the same run) is about 1/K of the K = 1 actor's; the
engine bytes split exactly (sum over partitions = K = 1's).

Usage: python benchmarks/bench_pdes_memory.py [--scenario scenarios/scale-10k.yaml]
           [--nodes 3000] [--rounds 2] [--parts 2]
Run under the shared lock on this box: flock /work/notes/bench.lock nice python ...
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from swarm_tune.sim.learning import BatchedLearning
from swarm_tune.sim.pdes import Coordinator, PartActor, RayParts
from swarm_tune.sim.pdes_world import quiet
from swarm_tune.sim.scenario import Scenario, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _scenario(path: Path, nodes: int, rounds: int) -> Scenario:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["nodes"]["count"] = nodes
    data["rounds"]["target"] = rounds
    return scenario_from_data(data)


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
    args = ap.parse_args()
    s = _scenario(args.scenario, args.nodes, args.rounds)
    print(f"{s.name}: {s.total_nodes} nodes, {s.rounds.target} rounds, load {os.getloadavg()}")
    bare = _bare_actor()
    print(f"  bare actor (imports only): peak {bare / MIB:.0f} MiB")
    one, w1, rows1 = _run(s, 1)
    many, wk, rowsk = _run(s, args.parts)
    ((peak1, held1),) = one
    print(f"  K=1: peak {peak1 / MIB:.0f} MiB, engine {held1 / MIB:.1f} MiB, wall {w1:.0f} s")
    for k, (peak, held) in enumerate(many):
        print(f"  K={args.parts} part {k}: peak {peak / MIB:.0f} MiB, engine {held / MIB:.1f} MiB")
    print(f"  rounds rows: K=1 {rows1}, K={args.parts} {rowsk} (same run: must match)")
    top = max(p for p, _ in many)
    world = peak1 - bare
    print(
        f"  goal: largest partition's share ~1/{args.parts} of the world's: "
        f"({top / MIB:.0f} - {bare / MIB:.0f}) / ({peak1 / MIB:.0f} - {bare / MIB:.0f}) = "
        f"{(top - bare) / world:.2f} (1/{args.parts} = {1 / args.parts:.2f}); "
        f"peak ratio {top / peak1:.2f}; engine bytes sum {sum(h for _, h in many) / MIB:.1f} "
        f"vs {held1 / MIB:.1f} MiB; wall K={args.parts} {wk:.0f} s; load {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
