"""Issue 14's acceptance figure: honest rounds under each outsider attack, against clean ones.

Three honest ``swarm-tune node`` processes train on loopback (the hostile suite's swarm); the
outsider (tests/support/outsider.py, plain py-libp2p and sockets) attacks node 0 with one
attack of the suite at a time. Windows alternate: clean, attack 1, clean, attack 2, ...,
clean; each attack's ratio is its averaged-round rate over the mean of the clean windows on
either side (goal >= 0.9). Printed per window: averaged rounds per second, the victim's CPU
seconds per second (what the attack costs it), the outsider's CPU seconds, the load average.

Why pinned (``--pin``, default on): on a shared 2-core box the outsider's own CPU (fresh keys,
handshakes) slows whichever nodes share its core, which says nothing about the node's
defences. Measured (first run, outsider beside the two honest peers on core 1, the victim
alone on core 0 using a third of it): the victim's CPU did not move under any attack, yet
``streams`` fell to 0.57, because the outsider took a third of the peers' core. So the
outsider shares the victim's core (the victim idles two thirds of it) and the honest peers
keep core 1: the attacker's CPU is charged to the victim (pessimistic), never to the rest of
the swarm. A ratio under the goal is then the attack reaching the victim: through its CPU
(its side of handshakes, bytes it must read) or through the protocol (a slot, a round
waiting). The victim's CPU seconds per second are printed per window to tell which.
The second run (load 8 -> 11.5) still fell short for ``streams`` (0.39) with the victim's CPU
unchanged again and the clean windows swinging 1.4-3.2 rounds/s: on a box that busy every
runnable process delays the nodes' next step. So the outsider also ran at nice 19 (the
nodes under ``nice``: 10). That was still not enough: at load 7, ``streams`` fell to 0.74 while
the victim's CPU went *down* (0.31 s/s against 0.27-0.39 in the clean windows around it; the
ping echo flood, its largest stranger cost in a profile, is bounded since). The outsider's own
2.4 CPU s (a fresh py-libp2p host per probe costs it about 40 ms, three times the victim's
side) still came out of the victim's core: nice 19 against nice 10 is a CFS weight of 15
against 110. So the outsider now runs under SCHED_IDLE (``chrt --idle 0``): it gets only CPU
time nothing else wants, as on a machine of its own, and the victim is charged only for what
the attack makes *it* do. Each attack line prints the victim's extra CPU over the clean windows
next to the ratio, and the outsider's report says how much it sent.

    flock /work/notes/bench.lock nice .venv/bin/python benchmarks/bench_outsider.py \
        [--window 10] [--attacks streams,offers] [--repeat 1] [--no-pin]

``--repeat N`` runs the attack list N times (still one clean window between any two attacks)
and pools each attack's windows: its rounds over the rounds its neighbouring clean rates
predict for the same seconds. On a shared box the clean rate swings by up to 2x between
windows, so one window pair per attack is mostly noise.

Not a timed test: five attacks and six clean windows take about two and a half minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS / "support"), str(TESTS / "chaos")]

from chaos_procs import chaos_env, chaos_node  # type: ignore[import-not-found]  # noqa: E402
from outsider_run import SUITE, Outsider, outsider_argv, refused  # type: ignore[import-not-found]  # noqa: E402
from procs import NodeProc, free_port, wait_until  # type: ignore[import-not-found]  # noqa: E402

GOAL = 0.9
#: A control: the outsider process runs its set-up and sits out the window doing nothing
#: (``idle`` with no connection). Its ratio is what the box alone does to a window with an
#: outsider process beside the victim: the noise floor the attacks' ratios are read against.
ATTACKS = {**SUITE, "null": "idle:0@127.0.0.7"}
#: The outsider yields to the nodes: a real attacker's CPU is its own machine's.
OUTSIDER_IDLE = ["chrt", "--idle", "0"]
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    label: str
    rounds: int
    seconds: float
    victim_cpu: float
    outsider_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.rounds / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.victim_cpu / self.seconds


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


class Meter:
    """Averaged rounds and CPU of the victim between ``start()`` and ``stop()``."""

    def __init__(self, victim: NodeProc) -> None:
        self.victim = victim

    def start(self) -> None:
        self._r0 = len(self.victim.committed())
        self._c0 = cpu_seconds(self.victim.pid)
        self._t0 = time.monotonic()

    def stop(self, label: str) -> Window:
        seconds = time.monotonic() - self._t0
        rounds = len(self.victim.committed()) - self._r0
        return Window(label, rounds, seconds, cpu_seconds(self.victim.pid) - self._c0)


def attack(
    meter: Meter, victim: NodeProc, name: str, window: float, prefix: list[str], tmp: Path
) -> tuple[Window, dict[str, object]]:
    # ``streams`` is a fixed set of probes (about 6 s): two rounds of it fill a window.
    spec = ATTACKS[name].replace("streams@", "streams:2@")
    argv = outsider_argv(victim.addr, spec, "--hold", str(window), prefix=prefix)
    out = Outsider(argv, tmp / f"outsider-{name}.err")
    try:
        out.started()  # set-up (imports, data port, identify) is not the attack
        meter.start()
        pid = out.proc.pid
        last = cpu_seconds(pid)
        while out.proc.poll() is None:  # its CPU, read while /proc still has it
            last = max(last, cpu_seconds(pid))
            time.sleep(0.2)
        report = out.finish(timeout=120)
    finally:
        out.kill()
    w = meter.stop(name)
    w.outsider_cpu = last
    return w, report["seen"][spec.split("@")[0].split(":")[0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=10.0, help="seconds per window")
    ap.add_argument(
        "--attacks", default=",".join(SUITE), help="comma list from the suite, or null (a control)"
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs of the attack list, pooled")
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    args = ap.parse_args()
    names = [n for n in args.attacks.split(",") if n]
    unknown = set(names) - set(ATTACKS)
    if unknown:
        raise SystemExit(f"unknown attacks: {', '.join(sorted(unknown))}")
    cores = sorted(os.sched_getaffinity(0))
    pin = args.pin and len(cores) >= 2
    victim_cpus = [str(cores[0])] if pin else []  # the victim and the outsider
    rest_cpus = [",".join(map(str, cores[1:]))] if pin else []  # the honest peers

    def taskset(cpus: list[str]) -> list[str]:
        return ["taskset", "-c", cpus[0]] if cpus else []

    with tempfile.TemporaryDirectory(prefix="bench-outsider-") as tmpdir:
        tmp = Path(tmpdir)
        mport = free_port()
        env = chaos_env(SWARM_MAX_ROUNDS="0", SWARM_QUORUM="3", SWARM_ROUND_TIMEOUT_S="8")
        nodes = [
            chaos_node(
                i, "127.0.0.1", free_port(), tmp, env, taskset(victim_cpus if i == 0 else rest_cpus)
            )
            for i in range(3)
        ]
        victim = nodes[0]
        victim.env["SWARM_METRICS_PORT"] = str(mport)
        windows: list[Window] = []
        seen: dict[str, dict[str, object]] = {}
        try:
            for node in nodes:
                node.start([p.addr for p in nodes if p is not node])
            wait_until(lambda: all(len(n.committed()) >= 3 for n in nodes), 180, "warm-up", nodes)
            meter = Meter(victim)

            def clean(i: int) -> None:
                meter.start()
                time.sleep(args.window)  # a measurement window
                windows.append(meter.stop(f"clean{i}"))

            clean(0)
            for i, name in enumerate(names * args.repeat, 1):
                prefix = [*OUTSIDER_IDLE, *taskset(victim_cpus)]
                w, seen[name] = attack(meter, victim, name, args.window, prefix, tmp)
                windows.append(w)
                assert victim.alive(), victim.tail()
                clean(i)
            counts = refused(mport)
        finally:
            for node in nodes:
                node.terminate(30)
    report(windows, seen, counts, pin, cores)


def report(
    windows: list[Window],
    seen: dict[str, dict[str, object]],
    counts: dict[str, float],
    pin: bool,
    cores: list[int],
) -> None:
    layout = (
        f"victim and outsider on core {cores[0]}, the honest peers on {cores[1:]}"
        if pin
        else "not pinned"
    )
    print(f"bench_outsider: 3 honest nodes on loopback, {layout}; load {os.getloadavg()}")
    head = ("window", "s", "rounds", "rounds/s", "victim cpu/s", "outsider cpu")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (10, 5, 6, 8, 12, 12), strict=True)))
    for w in windows:
        print(
            f"{w.label:>10} {w.seconds:5.1f} {w.rounds:6d} {w.rate:8.2f} "
            f"{w.cpu_rate:12.2f} {w.outsider_cpu:12.1f}"
        )
    cleans = [w for w in windows if w.label.startswith("clean")]
    attacks = [w for w in windows if not w.label.startswith("clean")]
    print(
        f"clean rate {statistics.mean(w.rate for w in cleans):.2f} rounds/s (mean of {len(cleans)})"
    )
    expected: dict[str, float] = {}
    got: dict[str, int] = {}
    for i, w in enumerate(attacks):
        base = (cleans[i].rate + cleans[i + 1].rate) / 2
        ratio = w.rate / base if base else 0.0
        expected[w.label] = expected.get(w.label, 0.0) + base * w.seconds
        got[w.label] = got.get(w.label, 0) + w.rounds
        cpu = (cleans[i].cpu_rate + cleans[i + 1].cpu_rate) / 2
        print(
            f"{w.label:>10}: ratio {ratio:.2f}; {w.rate:.2f} vs clean {base:.2f} rounds/s; "
            f"victim cpu {w.cpu_rate - cpu:+.2f} s/s over clean; outsider saw {seen[w.label]}"
        )
    worst = 1e9
    for label, exp in expected.items():
        ratio = got[label] / exp if exp else 0.0
        worst = min(worst, ratio)
        verdict = "ok" if ratio >= GOAL else "BELOW GOAL"
        n = sum(1 for w in attacks if w.label == label)
        print(
            f"{label:>10}: pooled ratio {ratio:.2f} over {n} window(s) (goal >= {GOAL}) "
            f"{verdict}; {got[label]} rounds, {exp:.0f} expected from the clean neighbours"
        )
    print(f"worst ratio {worst:.2f} (goal >= {GOAL}); refused {counts}")


if __name__ == "__main__":
    main()
