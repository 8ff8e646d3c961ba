"""Sim-to-real calibration (issue 15 item 5) on scenarios/calibrate-6.yaml's three link profiles.

What ``swarm-tune sim calibrate scenarios/calibrate-6.yaml --profile all`` does (sim/calibrate.py:
six real nodes in network namespaces, then the sim fed with the real learner's step times,
update size, the nodes' transport CPU per MB and the cores the machine left them), plus the
diagnostics that explain a gap, read from the
real nodes' logs: where a real round's time goes (learner queue, step, waiting for the
slowest peer's step, slowest step -> close), what a bulk message costs a node (encode,
decode + validate + handle, a whole send), the event loop's CPU per round, the wall time of
both worlds and the machine's load (the real world shares this machine's cores; the sim's
step and CPU costs are measured on it, under the same load).

    nice .venv/bin/python benchmarks/bench_calibrate.py [--profile lan40|wan10|lossy40|all]

Needs root, ``ip``, ``tc``, ``nft``. Goal: sim/real within 0.85-1.15 for the median round time
and the bytes sent per node per round, on every profile.
tests/chaos/test_chaos_netns.py holds the same goal on the same three runs in the default CI
run (40-60 s a profile on a quiet 2-core box, about two minutes on a busy one); this benchmark
adds the diagnostics that explain a gap.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from swarm_tune.analysis.calibration import format_table
from swarm_tune.sim.calibrate import PROFILES, Calibration, calibrate, record_time, with_profile
from swarm_tune.sim.calibrate_real import NodeLog

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "calibrate-6.yaml"


def print_phases(nodes: list[NodeLog]) -> None:
    """Where a real round's time goes (medians over nodes and rounds; one machine, one
    clock): open -> own step done (learner queue, then the step), own step done -> the LAST
    node's step of that round done, last step done -> close (sending, relaying, receiving,
    decoding and validating the contributions)."""
    queue, step, slowest, tail = [], [], [], []
    done = [{int(r["round"]): record_time(r) for r in n.events("train.done")} for n in nodes]
    last = {k: max(d[k] for d in done if k in d) for k in set().union(*done)}
    for n in nodes:
        own = {int(r["round"]): r for r in n.events("train.done")}
        for r in n.events("round.closed"):
            d = own.get(int(r["round"]))
            if d is None:
                continue
            opened = record_time(r) - float(r["duration_s"])
            step.append(float(d["seconds"]))
            queue.append(record_time(d) - opened - float(d["seconds"]))
            slowest.append(last[int(r["round"])] - record_time(d))
            tail.append(record_time(r) - last[int(r["round"])])
    med = statistics.median
    print(
        f"  real round phases (median s): learner queue {med(queue):.2f}, step {med(step):.2f}, "
        f"own step -> slowest node's step {med(slowest):.2f}, slowest step -> close "
        f"{med(tail):.2f}"
    )


def print_costs(nodes: list[NodeLog]) -> None:
    """What a bulk message costs a real node besides its link (the nodes' structured logs)."""
    med = statistics.median
    for ev in ("message.encoded", "message.handled"):
        rs = [r for n in nodes for r in n.events(ev)]
        if rs:
            cpu, wall = [float(r["cpu_s"]) for r in rs], [float(r["wall_s"]) for r in rs]
            print(
                f"  real {ev}: {len(rs)} messages of {med(int(r['bytes']) for r in rs):,.0f} B, "
                f"CPU median {med(cpu):.4f} s, wall median {med(wall):.4f} s (max {max(wall):.2f})"
            )
    sent = [float(r["seconds"]) for n in nodes for r in n.events("bulk.sent")]
    if sent:
        print(f"  real bulk.sent: median {med(sent):.3f} s ({min(sent):.3f}-{max(sent):.3f})")
    first = min(record_time(n.records[0]) for n in nodes if n.records)
    started = max(record_time(n.events("node.start")[0]) for n in nodes)
    ended = max(record_time(n.records[-1]) for n in nodes)
    print(
        f"  real twin wall: {started - first:.0f} s until every node started (imports, "
        f"dials), then {ended - started:.0f} s of rounds and shutdown"
    )
    loop = [float(r["loop_cpu_s"]) for n in nodes for r in n.events("round.closed")]
    print(f"  real event-loop CPU per node-round: median {med(loop):.3f} s")
    for n in nodes:
        syncs = [str(r["reason"]) for r in n.events("sync.started")]
        rounds = [
            (int(r["round"]), round(float(r["duration_s"]), 2)) for r in n.events("round.closed")
        ]
        print(f"    {n.name}: syncs {syncs}; (round, s) {rounds}")


def print_cpu_split(nodes: list[NodeLog]) -> None:
    """How much of a node's CPU per round (learner aside) follows the round's wall time
    rather than its bytes: the least-squares line cpu = fixed + rate x duration over the
    node-rounds after the first (every round moves the same bytes). The sim charges all of
    it per MB (``transport_s_per_mb``), which agrees with the real round where that round is
    CPU-bound and not elsewhere. Measured (issue 15, 3-6 nodes): 0.036-0.056 cores, about
    half of a node's CPU in a 5 s wan10 round at 6 nodes."""
    dur, cpu = [], []
    for n in nodes:
        step = {int(r["round"]): float(r["cpu_s"]) for r in n.events("train.done")}
        for r in n.events("round.closed"):
            if int(r["round"]) > 0:
                dur.append(float(r["duration_s"]))
                cpu.append(float(r["proc_cpu_s"]) - step.get(int(r["round"]), 0.0))
    if len(dur) < 3 or len(set(dur)) < 2:
        return
    fit = statistics.linear_regression(dur, cpu)
    print(
        f"  real CPU per node-round (learner aside) = {fit.intercept:.3f} s + {fit.slope:.3f} "
        f"cores x round time ({len(dur)} node-rounds, r {statistics.correlation(dur, cpu):.2f})"
    )


def run_profile(profile: str, workdir: Path) -> Calibration:
    data = with_profile(yaml.safe_load(SCENARIO.read_text()), profile)
    mbps, latency, loss = PROFILES[profile]
    print(f"== {data['name']}: {data['nodes']['count']} nodes, {mbps:g} Mbit/s both ways, "
          f"{latency:g} ms one-way, loss {loss:.0%}; load average {os.getloadavg()}")  # fmt: skip
    t0 = time.perf_counter()
    cal = calibrate(data, workdir / profile)
    wall = time.perf_counter() - t0
    print_phases(cal.logs)
    print_costs(cal.logs)
    print_cpu_split(cal.logs)
    print(format_table(f"sim vs real ({profile})", cal.rows, cal.sim, cal.real.stats))
    cls = cal.fed["compute"]["classes"][0]
    print(
        f"given to the sim: step time {cls['step_time']}, update {cal.real.payload:,.0f} B per "
        f"copy, transport CPU {cls['transport_s_per_mb']} s/MB, {cls['cores']} cores per node "
        f"(of {cal.real.machine_cores}); not fed: message wall {cal.real.message_s_per_mb:.4f} "
        f"s/MB, event-loop CPU {cal.real.loop_cpu_per_mb:.4f} s/MB, learner wall/CPU "
        f"{cal.real.slowdown:.1f}; both worlds took {wall:.0f} s wall; load average "
        f"{os.getloadavg()}"
    )
    return cal


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=[*PROFILES, "all"], default="lan40")
    args = ap.parse_args()
    profiles = list(PROFILES) if args.profile == "all" else [args.profile]
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        cals = [run_profile(p, Path(tmp)) for p in profiles]
    print("\nprofile   median round s sim / real  ratio   bytes/node-round sim / real  ratio")
    for p, c in zip(profiles, cals, strict=True):
        t, b = c.rows
        print(
            f"{p:<9} {t.sim:>8.2f} / {t.real:<8.2f} {t.ratio:>6.3f}   "
            f"{b.sim / 1e6:>8.3f} / {b.real / 1e6:<8.3f} MB {b.ratio:>6.3f}"
        )
    print(f"profiles within 0.85-1.15 on every figure: {sum(c.met for c in cals)} of {len(cals)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
