"""Real ``swarm-tune node`` processes on loopback, and their JSON logs, for the node tests.

Each process gets SWARM_* settings in its environment, a fixed key seed (stable peer id), its
own port and checkpoint folder. Reader threads collect stdout lines and JSON log lines from
stderr as they arrive, so a test can wait (with a timeout) for "node 2 closed round 5".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm_tune.runtime.ops.peer_id import peer_id_from_seed

REPO = Path(__file__).resolve().parents[2]
Record = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed_hex(i: int) -> str:
    return f"{i + 1:02x}" * 32


class NodeProc:
    def __init__(self, index: int, port: int, workdir: Path, env: dict[str, str]) -> None:
        self.index = index
        self.port = port
        self.peer_id = peer_id_from_seed(bytes.fromhex(seed_hex(index)))
        self.addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{self.peer_id}"
        self.ckpt_dir = workdir / f"ckpt-{index}"
        self.env = env
        self.records: list[Record] = []
        self.stdout: list[str] = []
        self.raw_err: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self, bootstrap: list[str]) -> None:
        env = dict(os.environ)
        env.update(self.env)
        env.update(
            SWARM_NODE_ID=f"n{self.index}",
            SWARM_SHARD_INDEX=str(self.index),
            SWARM_NODE_KEY_SEED=seed_hex(self.index),
            SWARM_LISTEN_HOST="127.0.0.1",
            SWARM_LISTEN_PORT=str(self.port),
            SWARM_CHECKPOINT_DIR=str(self.ckpt_dir),
            SWARM_BOOTSTRAP_PEERS=",".join(bootstrap),
        )
        with self._lock:
            self.records = []
            self.stdout = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swarm_tune.runtime.cli", "node"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True).start()

    def _read(self, stream: Any, is_err: bool) -> None:
        for line in stream:
            with self._lock:
                if not is_err:
                    self.stdout.append(line.rstrip("\n"))
                    continue
                self.raw_err.append(line)
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    self.records.append(rec)

    def events(self, name: str) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.get("event") == name]

    def closed_rounds(self) -> list[int]:
        return [int(r["round"]) for r in self.events("round.closed")]

    def max_closed(self) -> int:
        return max(self.closed_rounds(), default=-1)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, n: int = 30) -> str:
        with self._lock:
            return "".join(self.raw_err[-n:])


def wait_until(cond: Callable[[], bool], timeout: float, what: str, nodes: list[NodeProc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for n in nodes:
            if n.proc is not None and n.proc.poll() not in (None, 0, -signal.SIGKILL):
                raise AssertionError(f"node {n.index} died ({n.proc.returncode}):\n{n.tail()}")
        time.sleep(0.2)
    tails = "\n".join(f"--- node {n.index}\n{n.tail(15)}" for n in nodes)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def swarm_env(**extra: str) -> dict[str, str]:
    env = {
        "SWARM_RUN_ID": "node-test",
        "SWARM_MODEL_NAME": "tiny-gpt2",
        "SWARM_NUM_SHARDS": "3",
        "SWARM_LEARNING_RATE": "0.002",
        "SWARM_BATCH_SIZE": "8",
        "SWARM_ROUND_TIMEOUT_S": "8",
        "SWARM_HEARTBEAT_INTERVAL_S": "1",
        "SWARM_EVICTION_TIMEOUT_S": "6",
        "SWARM_MIN_PEERS": "2",
        "SWARM_QUORUM": "1.0",
        # Every loopback peer shares 127.0.0.0/24: the subnet cap would give each node's own
        # update half the weight and make replicas average different things on purpose.
        "SWARM_SUBNET_CAP": "1.0",
        "SWARM_LOG_FORMAT": "json",
        "SWARM_LOG_LEVEL": "INFO",
        "SWARM_ENABLE_MDNS": "false",
        "SWARM_ENABLE_DHT": "false",
        "SWARM_CHECKPOINT_EVERY_ROUNDS": "2",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.update(extra)
    return env
