"""Real ``swarm-tune node`` hosts in their own network namespaces, over emulated WAN links.

What is emulated (see netns_topology.py): per-link bandwidth (``tc tbf`` both ways), random
packet loss (nftables ``numgen``, in every host, counted) and latency (a userspace relay,
``swarm_tune.runtime.net.latency_relay``, that every TCP connection between hosts crosses:
libp2p control traffic *and* the bulk plane's direct TCP data connections). Direct host-to-host
packets are dropped by nftables, so there is no undelayed shortcut.

What it proves: the relay really adds the configured delay (a ping-pong probe between two
namespaces measures RTT >= 2 x one-way delay), and the hosts bootstrap through stand-in
addresses, exchange contributions and commit rounds (weighted averages of all of them) under
that latency, bandwidth cap and loss; and, as sim-to-real calibration's check (issue 15), that
the sim fed with their measured step times, update size, transport CPU and the cores the
machine left them predicts their bytes per node-round within +-15% and their median round
time within +-15%, at 6 nodes on each of calibrate-6.yaml's 3 link profiles. Both worlds'
figures are printed.

Needs root, ``ip``, ``tc`` and ``nft``: skipped with a reason when missing locally, failed when
``CI`` is set (``.ci/run`` installs them and runs as root).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from chaos_procs import require_root_tools
from netns_topology import Wan
from procs import Proc, patience, wait_until

from swarm_tune.analysis.calibration import format_table
from swarm_tune.sim.calibrate import PROFILES, Calibration, calibrate, with_profile

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(patience(170))]

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "calibrate-6.yaml"
PROBE_PORT = 7000

_ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while (b := c.recv(64)):
    c.sendall(b)
"""

_ECHO_CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); break
    except OSError:
        if time.monotonic() > deadline: raise
        time.sleep(0.1)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(5):
    t = time.perf_counter(); c.sendall(b"x")
    assert c.recv(1) == b"x"
    rtts.append(time.perf_counter() - t)
print(min(rtts), max(rtts), flush=True)
"""


def _probe_rtt(wan: Wan) -> tuple[float, float]:
    """Min/max ping-pong RTT from host 0 to host 1 through host 1's stand-in address."""
    server = Proc("echo")
    server.spawn(
        [*wan.exec_prefix(wan.ns(1)), sys.executable, "-c", _ECHO_SERVER, wan.real_ip(1),
         str(PROBE_PORT)],
        {},
    )  # fmt: skip
    try:
        wait_until(lambda: "listening" in server.lines(), 20, "echo server", [server])
        client = Proc("probe")
        client.spawn(
            [*wan.exec_prefix(wan.ns(0)), sys.executable, "-c", _ECHO_CLIENT, wan.standin_ip(1),
             str(PROBE_PORT)],
            {},
        )  # fmt: skip
        assert client.wait_exit(30) == 0, client.tail()
        wait_until(lambda: bool(client.lines()), 5, "probe output", [client])
        lo, hi = (float(x) for x in client.lines()[0].split())
        return lo, hi
    finally:
        server.kill()


def _twin(profile: str, workdir: Path, nodes: int = 6, rounds: int = 6) -> Calibration:
    """One profile: ``nodes`` real nodes for ``rounds`` rounds through ``swarm-tune sim
    calibrate``'s own code (sim/calibrate.py), then the sim fed with their figures. The same
    run proves the emulated WAN: the relay really delays (RTT >= 2 x one-way), every
    connection crossed it, loss dropped packets where the profile has loss, nothing is left
    behind; and the nodes commit every round with all of them."""
    data = with_profile(yaml.safe_load(SCENARIO.read_text()), profile)
    data["nodes"]["count"] = nodes
    data["rounds"]["target"] = rounds
    delay_ms, loss = PROFILES[profile][1], PROFILES[profile][2]
    seen: dict[str, Any] = {}

    def ready(wan: Wan) -> None:
        seen["wan"] = wan
        rtt_min, rtt_max = _probe_rtt(wan)
        print(f"probe RTT through the relay: min {rtt_min * 1e3:.1f} ms, max {rtt_max * 1e3:.1f}")
        # One relay crossing per direction: RTT >= 2 x one-way delay.
        assert rtt_min >= 2 * delay_ms / 1000 * 0.95, rtt_min

    def done(wan: Wan) -> None:
        seen["lost"] = sum(wan.counter(i, "loss")[0] for i in range(wan.hosts))
        seen["shortcut"] = sum(wan.counter(i, "shortcut")[0] for i in range(wan.hosts))
        seen["redirected"] = wan.redirected()

    def sim_starts() -> None:  # the CLI's progress bar steps here (sim/calibrate_cli.py)
        assert "lost" in seen and "sim" not in seen  # once, after the real twin is done
        seen["sim"] = True

    started = time.monotonic()
    print(f"== {profile}: load average {os.getloadavg()}")
    cal = calibrate(data, workdir, on_ready=ready, on_done=done, on_sim=sim_starts)
    assert seen.pop("sim") is True
    print(f"both worlds: {time.monotonic() - started:.1f} s; WAN counters {seen}")
    hosts = len(cal.logs)
    for node in cal.logs:
        closed = node.events("round.closed")
        metrics = node.events("node.stopped")[-1]["metrics"]
        print(
            f"{node.name}: contributors {[r['contributors'] for r in closed]} round s "
            f"{[round(float(r['duration_s']), 2) for r in closed]} accepted "
            f"{metrics['contributions_accepted']} wire {metrics['wire_rejected']}"
        )
        assert [int(r["round"]) for r in closed] == list(range(rounds)), closed
        assert all(r["outcome"] == "average" for r in closed), closed
        # Every round averages all of them, but the last may miss one: a node that has closed
        # its campaign leaves while its last contribution can still be in flight over a lossy
        # link (seen once in CI at lossy40: 5 of 6 in round 5; see the closing note).
        assert all(r["contributors"] == hosts for r in closed[:-1]), closed
        assert closed[-1]["contributors"] >= hosts - 1, closed
        assert metrics["contributions_accepted"] >= (hosts - 1) * rounds - 1, metrics
        assert metrics["wire_rejected"] == {}, metrics
    # Every connection went through the relay (>= one per ordered pair), loss (where the
    # profile has it) really dropped packets, and the WAN left nothing behind.
    assert seen["redirected"] >= hosts * (hosts - 1), seen
    assert (seen["lost"] > 0) == (loss > 0), seen
    assert seen["wan"].leftovers() == []
    print(format_table(f"sim vs real: {cal.name}", cal.rows, cal.sim, cal.real.stats))
    cls = cal.fed["compute"]["classes"][0]
    print(
        f"given to the sim: step {cls['step_time']}, transport CPU {cls['transport_s_per_mb']} "
        f"s/MB, {cls['cores']} cores per node; load average {os.getloadavg()}"
    )
    return cal


@pytest.mark.alone
@pytest.mark.timeout(patience(600))
def test_calibration_six_real_nodes_on_three_links_match_the_sim(tmp_path: Path) -> None:
    """Sim-to-real calibration's acceptance (issue 15): ``scenarios/calibrate-6.yaml``, six
    nodes, at each of its three link profiles: the sim's median round time and bytes per
    node-round within +-15% of the real twin's. The profiles run one after the other in one
    test, not as three tests xdist could run side by side: measured, two twins at once (12
    nodes on 2 cores) took 200 s each instead of 59 s and a wan10 round fell back. Cost:
    ~150 s for the three on a quiet box (39.5 s lossy40, 55.7 s wan10), 110-116 s a profile
    at load 12 (mostly six processes importing torch on two cores). It replaced the 3-node
    twin of earlier stops (same helper, a 2x bound), which it covers.

    Marked ``alone``: CI runs it after the slow set, with the box to itself. Beside another
    xdist worker's CPU-bound tests (CI, load ~10) the sim came out 1.03 / 1.06 / 1.16x the
    real median (lossy40 missed), against 0.90-0.93 on a quiet box. The likely reason, not
    measured directly: sim/host_cpu.py counts what the rest of the machine took as
    unavailable to the nodes, but a training test takes whatever the nodes leave idle and
    yields part of it when they are busy (the scheduler shares by runnable thread), so the
    nodes had more CPU when they needed it than the sim was told. Not modelled."""
    require_root_tools("ip", "tc", "nft")
    cals = {p: _twin(p, tmp_path / p) for p in PROFILES}
    print("profile   median round s sim / real  ratio   bytes/node-round ratio")
    for p, cal in cals.items():
        t, b = cal.rows
        print(f"{p:<9} {t.sim:>8.2f} / {t.real:<8.2f} {t.ratio:>6.3f}   {b.ratio:>6.3f}")
    for cal in cals.values():
        assert dict(cal.sim.outcomes) == dict(cal.real.stats.outcomes)
        time_row, bytes_row = cal.rows
        assert bytes_row.within_goal, bytes_row  # the issue's +-15%
        assert time_row.within_goal, time_row
