"""Sim-to-real calibration (issue 15 item 5): one scenario file, both worlds, side by side.

The real world: N ``swarm-tune node`` processes (tiny-gpt2 on CPU), each in its own network
namespace, wired by tests/chaos/netns_topology.py's ``Wan`` (tc tbf bandwidth both ways,
nftables loss, every TCP connection through ``swarm_tune.runtime.net.latency_relay`` for the
one-way latency). Their protocol settings are the scenario's ``protocol:`` block, turned into
SWARM_* settings by the same ``protocol_env`` the run manifests use.

The sim world: the same scenario dict, with two figures taken from the real run because they
are properties of the real learner, not of the network: the compute step time (the real
nodes' ``train.done`` seconds as a lognormal: median and spread) and the update's wire size
(the real nodes' Contribution bytes per copy sent). Everything the sim has to predict — round
times from links, latency and quorum; bytes per node per round including heartbeats and
hellos — is then
compared with analysis/calibration.py: sim, real, sim/real, and the +-15% goal.

    nice .venv/bin/python benchmarks/bench_calibrate.py [--profile lan40|wan10|lossy40|all]

Needs root, ``ip``, ``tc``, ``nft``. Namespaces are deleted on the way out, even on failure.
Why a benchmark and not a test: six real nodes importing torch take a minute or more on a
2-core box, far above the default CI run's budget.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "tests" / "chaos"))

from chaos_procs import chaos_env, chaos_node, require_root_tools, start_latency_relay  # type: ignore[import-not-found]  # noqa: E402
from netns_topology import Wan  # type: ignore[import-not-found]  # noqa: E402
from procs import Proc  # type: ignore[import-not-found]  # noqa: E402

from swarm_tune.analysis.calibration import (  # noqa: E402
    WorldStats,
    compare,
    format_table,
    world_stats,
)
from swarm_tune.runtime.ops.protocol_fields import protocol_env  # noqa: E402
from swarm_tune.sim.api import resolve_scenario, run  # noqa: E402

SCENARIO = ROOT / "scenarios" / "calibrate-6.yaml"
NODE_PORT = 4001
# Link profiles: (bandwidth Mbit/s both ways, one-way latency ms, loss fraction).
PROFILES: dict[str, tuple[int, float, float]] = {
    "lan40": (40, 25.0, 0.0),
    "wan10": (10, 60.0, 0.0),
    "lossy40": (40, 25.0, 0.01),
}


def with_profile(data: dict[str, Any], profile: str) -> dict[str, Any]:
    mbps, latency, loss = PROFILES[profile]
    out = copy.deepcopy(data)
    out["links"]["bandwidth"] = [{"uplink_mbps": mbps, "downlink_mbps": mbps}]
    out["links"]["loss"] = loss
    out["topology"]["latency_ms"] = latency
    out["name"] = f"{data['name']}-{profile}"
    return out


def real_env(data: dict[str, Any]) -> dict[str, str]:
    sc = resolve_scenario(data)
    proto = {f"SWARM_{k.upper()}": v for k, v in protocol_env(sc.protocol_config()).items()}
    env: dict[str, str] = chaos_env(
        **proto,
        SWARM_NUM_SHARDS=str(sc.nodes.count),
        SWARM_MAX_ROUNDS=str(sc.rounds.target),
    )
    return env


def run_real(data: dict[str, Any], workdir: Path) -> tuple[WorldStats, list[float], float, float]:
    """(stats, step seconds, wire bytes per update copy, CPU seconds of the nodes)."""
    require_root_tools("ip", "tc", "nft")
    count = int(data["nodes"]["count"])
    link = data["links"]["bandwidth"][0]
    assert link["uplink_mbps"] == link["downlink_mbps"], "Wan shapes both ways alike"
    wan = Wan(
        hosts=count,
        rate=f"{link['uplink_mbps']}mbit",
        loss_pct=round(100 * float(data["links"].get("loss", 0.0))),
    )
    env = real_env(data)
    nodes = [
        chaos_node(i, wan.real_ip(i), NODE_PORT, workdir, env, wan.exec_prefix(wan.ns(i)))
        for i in range(count)
    ]
    relay = Proc("relay")
    cpu0 = os.times()
    try:
        wan.up()
        start_latency_relay(relay, wan, float(data["topology"]["latency_ms"]))
        for node in nodes:
            node.start([p.addr_via(wan.standin_ip(p.index)) for p in nodes if p is not node])
        deadline = time.monotonic() + 600
        for node in nodes:
            code = node.wait_exit(timeout=max(1.0, deadline - time.monotonic()))
            if code != 0:
                raise RuntimeError(f"{node.name} exited {code}:\n{node.tail()}")
        relay_cpu = _cpu_s(relay.pid)
    finally:
        for p in [*nodes, relay]:
            p.kill()
        wan.down()
    cpu1 = os.times()
    closed = [r for n in nodes for r in n.closed_rounds()]
    per_round = []
    copies = []
    sync_bytes = 0.0
    for n in nodes:
        metrics = n.final_metrics()
        rounds = max(1, len(n.closed_rounds()))
        per_round.append(float(metrics["bytes_out"]) / rounds)
        by_type = metrics["bytes_out_by_message"]
        copies.append(by_type["Contribution"] / (rounds * (count - 1)))
        sync_bytes += (by_type.get("StateRequest", 0) + by_type.get("StateResponse", 0)) / rounds
        print(f"  real {n.name}: bytes out by message {by_type}")
        syncs = [str(r["reason"]) for r in n.events("sync.started")]
        by_round = [(int(r["round"]), round(float(r["duration_s"]), 2)) for r in n.closed_rounds()]
        print(f"    syncs {syncs}; (round, seconds) {by_round}")
    stats = world_stats(
        [float(r["duration_s"]) for r in closed], per_round, [str(r["outcome"]) for r in closed]
    )
    steps = [float(r["seconds"]) for n in nodes for r in n.events("train.done")]
    print_phases(nodes)
    print(
        f"  real bytes per node-round in state sync (the join syncs of staggered starts; the "
        f"sim starts every node together and syncs none): {sync_bytes / count:,.0f}"
    )
    print(f"  latency relay (one userspace process for every link) CPU: {relay_cpu:.1f} s")
    cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
    return stats, steps, statistics.median(copies), cpu


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (fields 14, 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _t(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


def print_phases(nodes: list[Any]) -> None:
    """Where a real round's time goes, from the node logs' timestamps (medians over nodes and
    rounds; every node runs on this machine, so one clock): open -> own step done (learner
    queue, then the step), own step done -> the LAST node's step of that round done (waiting
    for the slowest peer's compute), last step done -> close (sending, relaying, receiving,
    decoding and validating the contributions: what the sim models as links only)."""
    queue, step, slowest, tail = [], [], [], []
    applies = [float(r["seconds"]) for n in nodes for r in n.events("apply.done")]
    done = [{int(r["round"]): _t(r) for r in n.events("train.done")} for n in nodes]
    last = {k: max(d[k] for d in done if k in d) for k in set().union(*done)}
    for n in nodes:
        own = {int(r["round"]): r for r in n.events("train.done")}
        for r in n.closed_rounds():
            k = int(r["round"])
            d = own.get(k)
            if d is None:
                continue
            opened = _t(r) - float(r["duration_s"])
            step.append(float(d["seconds"]))
            queue.append(_t(d) - opened - float(d["seconds"]))
            slowest.append(last[k] - _t(d))
            tail.append(_t(r) - last[k])
    med = statistics.median
    print(
        f"  real round phases (median s): learner queue {med(queue):.2f}, step "
        f"{med(step):.2f}, own step -> slowest node's step {med(slowest):.2f}, slowest "
        f"step -> close {med(tail):.2f}; applying the average (after close) "
        f"{med(applies) if applies else 0:.2f}"
    )


def step_dist(steps: list[float]) -> dict[str, Any]:
    """The real steps as the sim's lognormal (median, sigma of log): with quorum 1.0 a round
    waits for the slowest of the nodes' steps, so the spread matters, not only the median."""
    logs = [math.log(max(x, 1e-4)) for x in steps]
    sigma = statistics.stdev(logs) if len(logs) > 1 else 0.0
    return {"dist": "lognormal", "median": round(statistics.median(steps), 4), "sigma": sigma}


def run_sim(data: dict[str, Any], steps: list[float], payload: float, out: Path) -> WorldStats:
    fed = copy.deepcopy(data)
    fed["compute"]["classes"][0]["step_time"] = step_dist(steps)
    fed["learning"]["virtual_payload_bytes"] = int(payload)
    r = run(fed, out=out)
    rows = r.rounds
    syncs = r.events[r.events["kind"] == "sync_start"]["detail"].value_counts().to_dict()
    per_round = rows.groupby("round")["t_close"].max() - rows.groupby("round")["t_open"].min()
    shown = [(int(k), round(v, 2)) for k, v in per_round.items()]
    print(f"  sim: syncs {syncs}; (round, seconds) {shown}")
    return world_stats(rows["t_close"] - rows["t_open"], rows["bytes_sent"], rows["outcome"])


def calibrate(profile: str, workdir: Path) -> bool:
    data = with_profile(yaml.safe_load(SCENARIO.read_text()), profile)
    mbps, latency, loss = PROFILES[profile]
    print(f"== {data['name']}: {data['nodes']['count']} nodes, {mbps} Mbit/s both ways, "
          f"{latency} ms one-way, loss {loss:.0%}")  # fmt: skip
    t0 = time.perf_counter()
    real, steps, payload, cpu = run_real(data, workdir / f"real-{profile}")
    wall_real = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim = run_sim(data, steps, payload, workdir / f"sim-{profile}")
    wall_sim = time.perf_counter() - t0
    rows = compare(sim, real)
    print(format_table(f"sim vs real ({profile})", rows, sim, real))
    print(
        f"fed to the sim from the real run: step time {step_dist(steps)} (train.done), "
        f"update {payload:,.0f} B per copy; real wall {wall_real:.0f} s, node CPU {cpu:.0f} s; "
        f"sim wall {wall_sim:.1f} s; load average {os.getloadavg()}"
    )
    return all(r.within_goal for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=[*PROFILES, "all"], default="lan40")
    args = ap.parse_args()
    profiles = list(PROFILES) if args.profile == "all" else [args.profile]
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        met = [calibrate(p, Path(tmp)) for p in profiles]
    print(f"profiles within +-15% on every figure: {sum(met)} of {len(met)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
