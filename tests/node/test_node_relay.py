"""``swarm-tune relay``: a real process with a stable peer id, clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from procs import REPO, free_port

from swarm_tune.runtime.ops.peer_id import peer_id_from_seed


def test_relay_prints_multiaddr_and_stops_on_sigterm() -> None:
    port = free_port()
    env = dict(
        os.environ,
        SWARM_LISTEN_HOST="127.0.0.1",
        SWARM_LISTEN_PORT=str(port),
        SWARM_ENABLE_MDNS="false",
        SWARM_ENABLE_DHT="false",
        SWARM_NODE_KEY_SEED="09" * 32,
        SWARM_LOG_FORMAT="json",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarm_tune.runtime.cli", "relay"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        pid = peer_id_from_seed(bytes([9]) * 32)
        assert line == f"SWARM_READY peer_id={pid} multiaddr=/ip4/127.0.0.1/tcp/{port}/p2p/{pid}"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert '"relay.stopped"' in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
