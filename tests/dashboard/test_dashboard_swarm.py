"""``swarm-tune swarm up`` with real processes: SIGKILL a node, see it evicted, see it rejoin.

Everything is observed the way an operator would: through the CLI (``swarm kill``,
``swarm down``) and the nodes' ``/api/state``. Short protocol timeouts come from the
environment, which the launcher passes through (only per-node settings are its own).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import REPO, wait_until

pytestmark = pytest.mark.slow
N = 3
EVICT_S = 4.0
RESTART_S = EVICT_S + 4.0


def _port_block(n: int) -> int:
    """A base port with ``n`` consecutive free ports (checked by binding each)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base: int = s.getsockname()[1]
        if base + n > 65000:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def _state(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as r:
            state: dict[str, Any] = json.load(r)
            return state
    except (OSError, http.client.HTTPException, ValueError):
        return None


def _wait(cond: Callable[[], bool], timeout: float, what: str, log: list[str]) -> None:
    wait_until(cond, timeout, what, interval=0.3, context=lambda: "".join(log[-30:]))


def _peer(state: dict[str, Any] | None, peer_id: str) -> dict[str, Any] | None:
    for p in (state or {}).get("peers", []):
        if p["peer_id"] == peer_id:
            return dict(p)
    return None


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm_tune.runtime.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_swarm_kill_evict_rejoin(tmp_path: Path) -> None:
    base = _port_block(2 * N)
    mbase = base + N
    env = dict(os.environ)
    env.update(
        SWARM_RUN_ID="swarm-test",
        SWARM_ROUND_TIMEOUT_S="4",
        SWARM_HEARTBEAT_INTERVAL_S="1",
        SWARM_EVICTION_TIMEOUT_S=str(EVICT_S),
        SWARM_MIN_PEERS="2",
        SWARM_QUORUM="1.0",
        SWARM_LOCAL_STEPS="1",
        SWARM_CHECKPOINT_EVERY_ROUNDS="2",
    )
    d = tmp_path / "swarm"
    args = ["--nodes", str(N), "--adversarial", "0", "--base-port", str(base)]
    args += ["--metrics-base-port", str(mbase), "--dir", str(d)]
    sup = subprocess.Popen(
        [sys.executable, "-m", "swarm_tune.runtime.cli", "swarm", "up", *args]
        + ["--restart-delay", str(RESTART_S)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []

    def read() -> None:
        assert sup.stdout is not None
        log.extend(iter(sup.stdout.readline, ""))

    threading.Thread(target=read, daemon=True).start()
    try:
        _wait(lambda: any("nodes up" in line for line in log), 120, "all nodes ready", log)
        state = json.loads((d / "swarm.json").read_text())
        nodes = state["nodes"]
        assert [n["name"] for n in nodes] == [f"node{i}" for i in range(N)]
        watcher, victim = nodes[0], nodes[-1]
        wport = int(watcher["metrics_port"])
        _wait(
            lambda: (_peer(_state(wport), victim["peer_id"]) or {}).get("live") is True,
            90,
            "victim live at node0",
            log,
        )
        # Rounds close with the victim present, so its own history has something to keep.
        _wait(
            lambda: len((_state(int(victim["metrics_port"])) or {}).get("history", [])) >= 2,
            120,
            "two rounds at the victim",
            log,
        )
        before = {r["round"] for r in _state(int(victim["metrics_port"]))["history"]}  # type: ignore[index]

        killed = _cli("swarm", "kill", victim["name"], "--dir", str(d), env=env)
        assert killed.returncode == 0, killed.stderr
        t_kill = time.monotonic()
        _wait(
            lambda: (_peer(_state(wport), victim["peer_id"]) or {}).get("live") is False,
            EVICT_S + 10,
            "victim evicted at node0",
            log,
        )
        evicted_after = time.monotonic() - t_kill
        s0 = _state(wport)
        assert s0 is not None and s0["metrics"]["peers_evicted"] >= 1
        assert any(e["target"] == victim["peer_id"] and not e["live"] for e in s0["edges"])

        _wait(
            lambda: any(f"restarted {victim['name']}" in x for x in log),
            RESTART_S + 10,
            "restart",
            log,
        )
        _wait(
            lambda: (_peer(_state(wport), victim["peer_id"]) or {}).get("live") is True,
            90,
            "victim live again at node0",
            log,
        )
        rejoined_after = time.monotonic() - t_kill
        new_pid = json.loads((d / "swarm.json").read_text())["nodes"][-1]["pid"]
        assert new_pid != victim["pid"]
        # The restarted node kept its round history on disk (curves survive a restart).
        after = _state(int(victim["metrics_port"]))
        assert after is not None
        assert before <= {r["round"] for r in after["history"]}
        print(f"evicted after {evicted_after:.1f}s, live again after {rejoined_after:.1f}s")

        pids = [int(n["pid"]) for n in json.loads((d / "swarm.json").read_text())["nodes"]]
        st = _cli("swarm", "status", "--dir", str(d), env=env)
        assert st.returncode == 0 and st.stdout.count("running") == N, st.stdout
        down = _cli("swarm", "down", "--dir", str(d), env=env)
        assert down.returncode == 0, down.stderr
        assert sup.wait(timeout=60) == 0
        assert not (d / "swarm.json").exists()
        for pid in pids:  # every node process is gone (or the pid now belongs to another)
            cmd = Path(f"/proc/{pid}/cmdline")
            assert not cmd.exists() or b"swarm_tune" not in cmd.read_bytes()
        assert any("swarm stopped" in x for x in log)
    finally:
        if sup.poll() is None:
            sup.terminate()
            try:
                sup.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sup.kill()
