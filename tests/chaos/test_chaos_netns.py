"""Three real ``swarm-tune node`` hosts in their own network namespaces, over emulated WAN links.

What is emulated (see netns_topology.py): per-link bandwidth (``tc tbf`` both ways), random
packet loss (nftables ``numgen``, in every host, counted) and latency (a userspace relay,
``swarm_tune.runtime.net.latency_relay``, that every TCP connection between hosts crosses:
libp2p control traffic *and* the bulk plane's direct TCP data connections). Direct host-to-host
packets are dropped by nftables, so there is no undelayed shortcut.

What it proves: the relay really adds the configured delay (a ping-pong probe between two
namespaces measures RTT >= 2 x one-way delay), and >= 3 hosts bootstrap through stand-in
addresses, exchange contributions and commit rounds (weighted averages of all 3 nodes) under
that latency, bandwidth cap and loss; and, as sim-to-real calibration's CI check (issue 15),
that the sim fed with their measured step times, update size and transport CPU predicts their
bytes per node-round within +-15% (their median round time: within a factor of 2, see the
test). Both worlds' figures are printed.

Needs root, ``ip``, ``tc`` and ``nft``: skipped with a reason when missing locally, failed when
``CI`` is set (``.ci/run`` installs them and runs as root).
"""

from __future__ import annotations

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
from swarm_tune.sim.calibrate import PROFILES, calibrate, with_profile

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(patience(170))]

HOSTS = 3
ROUNDS = 3
DELAY_MS = PROFILES["lossy40"][1]  # one way
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


def test_three_hosts_over_the_emulated_wan_commit_rounds_and_match_the_sim(tmp_path: Path) -> None:
    """The hosts run as sim-to-real calibration's twin (issue 15): ``scenarios/calibrate-6.yaml``
    at its lossy40 profile, cut to 3 nodes and 3 rounds, through ``swarm-tune sim calibrate``'s
    own code (sim/calibrate.py), then the sim fed with their figures. The full calibration (6
    nodes, 6 rounds, 3 profiles: 90 s or more a profile here) is benchmarks/bench_calibrate.py."""
    require_root_tools("ip", "tc", "nft")
    data = with_profile(yaml.safe_load(SCENARIO.read_text()), "lossy40")
    data["nodes"]["count"] = HOSTS
    data["rounds"]["target"] = ROUNDS
    seen: dict[str, Any] = {}

    def ready(wan: Wan) -> None:
        seen["wan"] = wan
        rtt_min, rtt_max = _probe_rtt(wan)
        print(f"probe RTT through the relay: min {rtt_min * 1e3:.1f} ms, max {rtt_max * 1e3:.1f}")
        # One relay crossing per direction: RTT >= 2 x one-way delay.
        assert rtt_min >= 2 * DELAY_MS / 1000 * 0.95, rtt_min

    def done(wan: Wan) -> None:
        seen["lost"] = sum(wan.counter(i, "loss")[0] for i in range(wan.hosts))
        seen["shortcut"] = sum(wan.counter(i, "shortcut")[0] for i in range(wan.hosts))
        seen["redirected"] = wan.redirected()

    def sim_starts() -> None:  # the CLI's progress bar steps here (sim/calibrate_cli.py)
        assert "lost" in seen and "sim" not in seen  # once, after the real twin is done
        seen["sim"] = True

    started = time.monotonic()
    cal = calibrate(data, tmp_path, on_ready=ready, on_done=done, on_sim=sim_starts)
    assert seen.pop("sim") is True
    print(f"both worlds: {time.monotonic() - started:.1f} s; WAN counters {seen}")
    hosts = len(cal.logs)
    for node in cal.logs:
        closed = node.events("round.closed")
        metrics = node.events("node.stopped")[-1]["metrics"]
        fallback = [r for r in node.records if "using the libp2p stream" in str(r.get("event"))]
        print(
            f"{node.name}: contributors {[r['contributors'] for r in closed]} round s "
            f"{[round(float(r['duration_s']), 2) for r in closed]} accepted "
            f"{metrics['contributions_accepted']} wire {metrics['wire_rejected']} stream "
            f"fallbacks {len(fallback)}"
        )
        assert [int(r["round"]) for r in closed] == list(range(ROUNDS)), closed
        assert all(r["outcome"] == "average" and r["contributors"] == hosts for r in closed)
        assert metrics["contributions_accepted"] >= (hosts - 1) * ROUNDS, metrics
        assert metrics["wire_rejected"] == {}, metrics
    # Every connection went through the relay (>= one per ordered pair), loss really dropped
    # packets, and the WAN left nothing behind.
    assert seen["redirected"] >= hosts * (hosts - 1) and seen["lost"] > 0, seen
    assert seen["wan"].leftovers() == []

    print(format_table(f"sim vs real: {cal.name}", cal.rows, cal.sim, cal.real.stats))
    time_row, bytes_row = cal.rows
    assert dict(cal.sim.outcomes) == dict(cal.real.stats.outcomes)
    assert bytes_row.within_goal, bytes_row  # the issue's +-15%
    # Round time: the goal, +-15%, is held at 6 nodes by benchmarks/bench_calibrate.py (1.015-
    # 1.19 at load 5-12), not here: 3 nodes are not CPU-bound and 9 node-rounds on a CI box
    # running another slow test beside it are noisy (0.77 measured). CI catches a broken model
    # (a link or CPU term gone or counted twice), not a 15% drift.
    assert 0.5 <= time_row.ratio <= 2.0, time_row
