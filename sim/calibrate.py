"""Sim-to-real calibration (issue 15): one scenario file drives both worlds, side by side.

The real world is the scenario's twin (sim/calibrate_real.py: one ``swarm-tune node`` per
namespace on the scenario's links). The sim world is the same scenario with the figures the
sim must be *given*, because they belong to the real learner, machine and payload, not to
the network it has to predict, read from the real nodes' logs of the same run:

* the compute step time (``train.done`` seconds, as a lognormal: median and spread; with a
  quorum of 1.0 a round waits for the slowest step, so the spread matters);
* the update's wire size (Contribution bytes per copy sent);
* the node's transport CPU per MB (``transport_s_per_mb``): all of a node's CPU in a round
  (``round.closed`` ``proc_cpu_s``: event loop, codec threads, apply) less its learner's
  step (``train.done`` ``cpu_s``), per MB of bulk bytes it sent or received
  (``bulk.sent``, ``message.handled``), over the rounds after the first (round 0 also pays
  start-up: dials, handshakes, the join sync); the median node;
* the cores each node had for it (``cores``): the machine's cores less what the rest of the
  machine used while the rounds ran (sim/host_cpu.py: the relay and every other process),
  shared by the N nodes, at most one each. Measured on the twin, this is what makes a
  6-nodes-on-2-cores round CPU-bound; a user's nodes on machines of their own keep 1. The
  nodes share those cores as the OS does (``shared_cores``: a node with nothing to carry
  leaves its part to the busy ones): measured, the real nodes used every core the machine
  left them (0.61-0.72 of 0.64-0.72 cores, 6 runs), and with a fixed share each the sim's
  rounds came out 2.5-6% longer (sim/links.py).

Both are parameters of the compute class (sim/links.py's transport CPU servers): a user
measures them on their own machine, nothing here is a constant of this one. Measured and
*not* fed (benchmarks/bench_calibrate.py prints them): the wall time per MB of a bulk
message's encode and decode (``message.encoded``, ``message.handled``: their CPU is in the
transport figure and the rest of their wall was waiting for a core, which the CPU servers
now model, so feeding it as well counted that wait twice), the event-loop thread's CPU per
MB, and the learner's wall over its thread CPU. (Tried before: charging the event loop's CPU
per MB times the learner's wall/CPU ratio, 11-33 here because its thread waits for the GIL,
over-charged every message, 4.9 s per MB, and put the sim's fastest rounds 1.45x above the
real ones.)

Everything else — round times from links, latency, loss, the bulk plane's handshake and the
protocol; bytes per node per round including heartbeats, hellos and join syncs — the sim
predicts, and analysis/calibration.py compares: sim, real, sim/real, the +-15% goal.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from swarm_tune.analysis.calibration import Row, WorldStats, compare, world_stats
from swarm_tune.sim.calibrate_real import NodeLog, TwinRun, WanHook, run_real_twin
from swarm_tune.sim.host_cpu import available_cores

__all__ = [
    "PROFILES",
    "Calibration",
    "RealFacts",
    "calibrate",
    "fed_scenario",
    "real_facts",
    "record_time",
    "with_profile",
]

BULK_EVENTS = ("message.encoded", "message.handled")  # a bulk message encoded / received

# Link profiles: (Mbit/s both ways, one-way latency ms, loss fraction).
PROFILES: dict[str, tuple[float, float, float]] = {
    "lan40": (40, 25.0, 0.0),
    "wan10": (10, 60.0, 0.0),
    "lossy40": (40, 25.0, 0.01),
}


def with_profile(data: dict[str, Any], profile: str) -> dict[str, Any]:
    """The scenario dict with one of PROFILES' links (KeyError for an unknown name)."""
    mbps, latency, loss = PROFILES[profile]
    out = copy.deepcopy(data)
    out.setdefault("links", {})["bandwidth"] = [{"uplink_mbps": mbps, "downlink_mbps": mbps}]
    out["links"]["loss"] = loss
    out.setdefault("topology", {"kind": "full"})["latency_ms"] = latency
    out["name"] = f"{data['name']}-{profile}"
    return out


@dataclass(frozen=True)
class RealFacts:
    """The real run's figures (WorldStats) and what the sim takes from it as given."""

    stats: WorldStats
    steps: list[float]  # train.done seconds
    payload: float  # wire bytes per update copy
    transport_s_per_mb: float  # CPU s per MB sent or received, learner aside (median node)
    cores: float  # cores per node the rest of the machine left during the rounds
    machine_cores: int
    message_s_per_mb: float  # message.encoded / message.handled wall seconds per MB (median)
    loop_cpu_per_mb: float  # event-loop CPU s per MB encoded or received (median node)
    slowdown: float  # the learner's wall s per thread-CPU s (diagnostic: GIL waits too)


def record_time(record: Mapping[str, Any]) -> float:
    """A log record's time (epoch seconds: one machine, one clock for every node)."""
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


def transport_s_per_mb(logs: Sequence[NodeLog]) -> float:
    """The median node's CPU besides its learner per MB of bulk bytes (module docstring)."""
    per_node = []
    for n in logs:
        closed = n.events("round.closed")
        if len(closed) < 2:
            continue
        t0, t1 = record_time(closed[0]), record_time(closed[-1])

        def inside(r: Mapping[str, Any], t0: float = t0, t1: float = t1) -> bool:
            return t0 < record_time(r) <= t1

        cpu = sum(float(r["proc_cpu_s"]) for r in closed[1:])
        cpu -= sum(float(r["cpu_s"]) for r in n.events("train.done") if inside(r))
        moved = sum(
            int(r["bytes"])
            for ev in ("bulk.sent", "message.handled")
            for r in n.events(ev)
            if inside(r)
        )
        if moved > 0:
            per_node.append(max(0.0, cpu) / (moved / 1e6))
    if not per_node:
        raise RuntimeError("no node logged CPU and bulk bytes after its first round")
    return statistics.median(per_node)


def node_cores(run: TwinRun) -> float:
    """Cores per node the rest of the machine left while the rounds ran (at most 1: a node's
    transport is one event loop, its codec threads share its GIL)."""
    closed = [r for n in run.logs for r in n.events("round.closed")]
    start = min(record_time(r) - float(r["duration_s"]) for r in closed)
    end = max(record_time(r) for r in closed)
    free = available_cores(run.cpu, start, end, run.cores)
    return min(1.0, free / len(run.logs))


def real_facts(run: TwinRun) -> RealFacts:
    logs = run.logs
    count = len(logs)
    per_round, copies, durations, outcomes = [], [], [], []
    losses: list[tuple[int, float]] = []
    for n in logs:
        closed = n.events("round.closed")
        stopped = n.events("node.stopped")
        if not closed or not stopped:
            raise RuntimeError(f"{n.name} closed no round or did not stop cleanly")
        metrics = stopped[-1]["metrics"]
        per_round.append(float(metrics["bytes_out"]) / len(closed))
        sent = metrics["bytes_out_by_message"].get("Contribution", 0)
        copies.append(sent / (len(closed) * max(1, count - 1)))
        durations += [float(r["duration_s"]) for r in closed]
        outcomes += [str(r["outcome"]) for r in closed]
        losses += [(int(r["round"]), float(r["loss"])) for r in n.events("train.done")]
    steps = [float(r["seconds"]) for n in logs for r in n.events("train.done")]
    cpu = [float(r.get("cpu_s", 0.0)) for n in logs for r in n.events("train.done")]
    slowdown = statistics.median(steps) / statistics.median(cpu) if min(cpu, default=0) > 0 else 1.0
    wall_per_mb = [
        float(r["wall_s"]) / (int(r["bytes"]) / 1e6)
        for n in logs
        for ev in BULK_EVENTS
        for r in n.events(ev)
    ]
    loop_per_mb = []
    for n in logs:
        mb = sum(int(r["bytes"]) for ev in BULK_EVENTS for r in n.events(ev)) / 1e6
        loop = sum(float(r.get("loop_cpu_s", 0.0)) for r in n.events("round.closed"))
        if mb > 0:
            loop_per_mb.append(loop / mb)
    return RealFacts(
        world_stats(durations, per_round, outcomes, losses),
        steps,
        statistics.median(copies),
        transport_s_per_mb(logs),
        node_cores(run),
        run.cores,
        statistics.median(wall_per_mb) if wall_per_mb else 0.0,
        statistics.median(loop_per_mb) if loop_per_mb else 0.0,
        max(1.0, slowdown),
    )


def step_dist(steps: Sequence[float]) -> dict[str, Any]:
    """The real steps as the sim's lognormal (median, sigma of the logs)."""
    logs = [math.log(max(x, 1e-4)) for x in steps]
    sigma = statistics.stdev(logs) if len(logs) > 1 else 0.0
    return {"dist": "lognormal", "median": round(statistics.median(steps), 4), "sigma": sigma}


def fed_scenario(data: dict[str, Any], real: RealFacts) -> dict[str, Any]:
    """The scenario with the real run's givens (module docstring) in every compute class."""
    fed = copy.deepcopy(data)
    for cls in fed.setdefault("compute", {}).setdefault("classes", [{}]):
        cls["step_time"] = step_dist(real.steps)
        cls["transport_s_per_mb"] = round(real.transport_s_per_mb, 5)
        cls["cores"] = round(real.cores, 4)
        cls["shared_cores"] = True  # the twin's nodes are on one machine
        cls["message_s_per_mb"] = 0.0  # its CPU is in transport_s_per_mb (module docstring)
    fed.setdefault("learning", {})["virtual_payload_bytes"] = int(real.payload)
    return fed


def sim_stats(fed: dict[str, Any], out: Path) -> WorldStats:
    from swarm_tune.sim.api import run

    rows = run(fed, out=out).rounds
    # Only the rounds the real nodes run (SWARM_MAX_ROUNDS = the target): a sim node may
    # close the round after the target before the run stops, and a real node never opens it.
    rows = rows[rows["round"] < int(fed["rounds"]["target"])]
    losses = zip(rows["round"].astype(int), rows["loss"].astype(float), strict=True)
    return world_stats(
        rows["t_close"] - rows["t_open"], rows["bytes_sent"], rows["outcome"], losses
    )


@dataclass(frozen=True)
class Calibration:
    name: str
    sim: WorldStats
    real: RealFacts
    fed: dict[str, Any]
    rows: list[Row]
    logs: list[NodeLog]  # the real nodes' (for diagnostics)

    @property
    def met(self) -> bool:
        return all(r.within_goal for r in self.rows)


def calibrate(
    data: dict[str, Any],
    workdir: Path,
    on_ready: WanHook | None = None,
    on_done: WanHook | None = None,
    on_sim: Callable[[], None] | None = None,
) -> Calibration:
    """Run the scenario dict's real twin, then the sim fed with its givens; compare. The
    hooks go to ``run_real_twin``; ``on_sim`` is called when the real twin is done and the
    sim starts (the CLI's progress bar)."""
    import yaml

    from swarm_tune.sim.scenario import parse_scenario

    sc = parse_scenario(yaml.safe_dump(data), str(data["name"]))
    twin = run_real_twin(sc, workdir / "real", on_ready=on_ready, on_done=on_done)
    real = real_facts(twin)
    fed = fed_scenario(data, real)
    if on_sim is not None:
        on_sim()
    sim = sim_stats(fed, workdir / "sim")
    return Calibration(str(data["name"]), sim, real, fed, compare(sim, real.stats), twin.logs)
