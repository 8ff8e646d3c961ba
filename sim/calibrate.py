"""Sim-to-real calibration (issue 15): one scenario file drives both worlds, side by side.

The real world is the scenario's twin (sim/calibrate_real.py: one ``swarm-tune node`` per
namespace on the scenario's links). The sim world is the same scenario with the figures the
sim must be *given*, because they belong to the real learner, machine and payload, not to
the network it has to predict, read from the real nodes' logs of the same run:

* the compute step time (``train.done`` seconds, as a lognormal: median and spread; with a
  quorum of 1.0 a round waits for the slowest step, so the spread matters);
* the update's wire size (Contribution bytes per copy sent);
* the node's time per MB of a bulk message (``message.encoded`` and ``message.handled`` wall
  seconds: encode; decode, validate, hand to the core; on a shared machine that includes
  waiting for a core and for the GIL, as the step time does).

Measured and *not* fed (printed by benchmarks/bench_calibrate.py): the event loop's CPU per
MB (``round.closed`` ``loop_cpu_s``: transport, sealing, heartbeats besides the codec) and the
learner's wall over its thread CPU (``train.done`` ``cpu_s``). Multiplying the two was tried:
the learner's ratio is 11-33 here because its thread waits for the GIL while the event loop
runs, not only for a core, so the product (4.9 s per MB) over-charged every message and put
the sim's fastest rounds 1.45x above the real ones.

Everything else — round times from links, latency, loss, the bulk plane's handshake and the
protocol; bytes per node per round including heartbeats, hellos and join syncs — the sim
predicts, and analysis/calibration.py compares: sim, real, sim/real, the +-15% goal.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_tune.analysis.calibration import Row, WorldStats, compare, world_stats
from swarm_tune.sim.calibrate_real import NodeLog, run_real_twin

__all__ = ["PROFILES", "Calibration", "RealFacts", "calibrate", "fed_scenario", "with_profile"]

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
    message_s_per_mb: float  # message.encoded / message.handled wall seconds per MB (median)
    loop_cpu_per_mb: float  # event-loop CPU s per MB encoded or received (median node)
    slowdown: float  # the learner's wall s per thread-CPU s (diagnostic: GIL waits too)


def real_facts(logs: Sequence[NodeLog]) -> RealFacts:
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
        cls["message_s_per_mb"] = round(real.message_s_per_mb, 5)
    fed.setdefault("learning", {})["virtual_payload_bytes"] = int(real.payload)
    return fed


def sim_stats(fed: dict[str, Any], out: Path) -> WorldStats:
    from swarm_tune.sim.api import run

    rows = run(fed, out=out).rounds
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


def calibrate(data: dict[str, Any], workdir: Path) -> Calibration:
    """Run the scenario dict's real twin, then the sim fed with its givens; compare."""
    import yaml

    from swarm_tune.sim.scenario import parse_scenario

    sc = parse_scenario(yaml.safe_dump(data), str(data["name"]))
    logs = run_real_twin(sc, workdir / "real")
    real = real_facts(logs)
    fed = fed_scenario(data, real)
    sim = sim_stats(fed, workdir / "sim")
    return Calibration(str(data["name"]), sim, real, fed, compare(sim, real.stats), logs)
