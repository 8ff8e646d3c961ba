"""Three real ``swarm-tune node`` hosts in their own network namespaces, over emulated WAN links.

What is emulated (see netns_topology.py): per-link bandwidth (``tc tbf`` both ways), random
packet loss (nftables ``numgen``, in every host, counted) and latency (a userspace relay,
``swarm_tune.runtime.net.latency_relay``, that every TCP connection between hosts crosses:
libp2p control traffic *and* the bulk plane's direct TCP data connections). Direct host-to-host
packets are dropped by nftables, so there is no undelayed shortcut.

What it proves: the relay really adds the configured delay (a ping-pong probe between two
namespaces measures RTT >= 2 x one-way delay), and >= 3 hosts bootstrap through stand-in
addresses, exchange contributions and commit rounds (weighted averages of all 3 nodes) under
that latency, bandwidth cap and loss. Round times are printed.

Needs root, ``ip``, ``tc`` and ``nft``: skipped with a reason when missing locally, failed when
``CI`` is set (``.ci/run`` installs them and runs as root).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from chaos_procs import chaos_env, chaos_node, require_root_tools, start_latency_relay
from netns_topology import Wan
from procs import Proc, patience, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(patience(170))]

DELAY_MS = 25.0
ROUNDS = 4
NODE_PORT = 4001
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


def test_three_hosts_commit_rounds_over_emulated_wan(tmp_path: Path) -> None:
    require_root_tools("ip", "tc", "nft")
    wan = Wan(hosts=3, rate="40mbit", loss_pct=1)
    relay = Proc("relay")
    env = chaos_env(SWARM_MAX_ROUNDS=str(ROUNDS), SWARM_QUORUM="1.0")
    nodes = [
        chaos_node(i, wan.real_ip(i), NODE_PORT, tmp_path, env, wan.exec_prefix(wan.ns(i)))
        for i in range(wan.hosts)
    ]
    try:
        wan.up()
        start_latency_relay(relay, wan, DELAY_MS)
        rtt_min, rtt_max = _probe_rtt(wan)
        print(
            f"probe RTT through the relay: min {rtt_min * 1e3:.1f} ms, max {rtt_max * 1e3:.1f} ms"
        )
        # One relay crossing per direction: RTT >= 2 x one-way delay.
        assert rtt_min >= 2 * DELAY_MS / 1000 * 0.95, rtt_min

        started = time.monotonic()
        for node in nodes:
            node.start([p.addr_via(wan.standin_ip(p.index)) for p in nodes if p is not node])
        for node in nodes:
            try:
                code = node.wait_exit(timeout=max(1.0, 130 - (time.monotonic() - started)))
            except Exception as exc:
                raise AssertionError(f"{node.name} did not finish: {exc}\n{node.tail()}") from exc
            assert code == 0, node.tail()
        elapsed = time.monotonic() - started

        for node in nodes:
            closed = node.closed_rounds()
            committed = node.committed()
            metrics = node.final_metrics()
            durations = [float(r["duration_s"]) for r in closed]
            print(
                f"{node.name}: closed {len(closed)} committed {len(committed)} "
                f"contributors {[r['contributors'] for r in closed]} "
                f"round s {[round(d, 2) for d in durations]} "
                f"accepted {metrics['contributions_accepted']} "
                f"rejected {metrics['contributions_rejected']} wire {metrics['wire_rejected']} "
                f"send_failures {metrics['send_failures']} "
                f"{[(r['message'], r['error'][:80]) for r in node.events('send.failed')]}"
            )
            assert node.max_closed() == ROUNDS - 1, closed
            assert len(committed) >= ROUNDS - 1, closed
            assert max(r["contributors"] for r in committed) == wan.hosts
            # Contributions from both peers were accepted over the emulated links.
            assert metrics["contributions_accepted"] >= 2 * (ROUNDS - 1), metrics
            assert metrics["wire_rejected"] == {}, metrics
            # The bulk plane's direct TCP went through the relay too: no fallback to streams.
            assert node.grep("using libp2p stream") == [], node.grep("using libp2p stream")
        for i in range(wan.hosts):
            lost, _ = wan.counter(i, "loss")
            shortcut, _ = wan.counter(i, "shortcut")
            print(f"host {i}: packets dropped by loss rule {lost}, direct-path drops {shortcut}")
        redirected = wan.redirected()
        print(f"connections redirected into the latency relay: {redirected}; total {elapsed:.1f}s")
        # Libp2p and bulk data connections went through the relay (>= one per ordered pair).
        assert redirected >= wan.hosts * (wan.hosts - 1)
        assert sum(wan.counter(i, "loss")[0] for i in range(wan.hosts)) > 0
    finally:
        for p in [*nodes, relay]:
            p.kill()
        wan.down()
        assert wan.leftovers() == []
