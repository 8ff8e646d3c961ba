"""Real ``swarm-tune node`` processes for the chaos tests, optionally inside a network namespace.

Why not reuse tests/node/node_procs.py directly: chaos nodes listen on namespace addresses, run
under ``ip netns exec`` and are watched for memory (RSS from /proc). The shape is the same: a
fixed key seed per node (stable peer id), reader threads that collect stdout and JSON log lines
as they arrive, and ``wait_until`` with a hard timeout that fails fast when a node dies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from swarm_tune.runtime.ops.peer_id import peer_id_from_seed

REPO = Path(__file__).resolve().parents[2]
Record = dict[str, Any]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    """Skip when a capability is missing locally; in CI a missing capability is a failure."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def require_root_tools(*tools: str) -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, tc, nftables)")
    missing = [t for t in tools if shutil.which(t) is None]
    require(not missing, f"missing tools: {', '.join(missing)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed_hex(i: int) -> str:
    return f"{i + 0x41:02x}" * 32


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS from /proc), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Proc:
    """A child process whose stdout lines and JSON stderr records are collected live."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stdout: list[str] = []
        self.records: list[Record] = []
        self.raw_err: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def spawn(self, argv: Sequence[str], env: dict[str, str]) -> None:
        full = dict(os.environ)
        full.update(env)
        self.proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=full,
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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: str) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.get("event") == name]

    def grep(self, text: str) -> list[Record]:
        """Records whose event (for stdlib loggers: the whole message) contains ``text``."""
        with self._lock:
            return [r for r in self.records if text in str(r.get("event", ""))]

    def lines(self) -> list[str]:
        with self._lock:
            return list(self.stdout)

    def closed_rounds(self) -> list[Record]:
        return self.events("round.closed")

    def committed(self) -> list[Record]:
        return [r for r in self.closed_rounds() if r["outcome"] == "average"]

    def max_closed(self) -> int:
        return max((int(r["round"]) for r in self.closed_rounds()), default=-1)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, n: int = 30) -> str:
        with self._lock:
            return "".join(self.raw_err[-n:])


class ChaosNode(Proc):
    """One ``swarm-tune node`` (key seed ``index``), optionally run under ``prefix``."""

    def __init__(self, index: int, host: str, port: int, workdir: Path) -> None:
        super().__init__(f"n{index}")
        self.index = index
        self.host = host
        self.port = port
        self.seed = seed_hex(index)
        self.peer_id = peer_id_from_seed(bytes.fromhex(self.seed))
        self.ckpt_dir = workdir / f"ckpt-{index}"

    def addr_via(self, host: str) -> str:
        """This node's multiaddr as dialled through ``host`` (itself, or a stand-in)."""
        return f"/ip4/{host}/tcp/{self.port}/p2p/{self.peer_id}"

    def start(
        self, bootstrap: Sequence[str], env: dict[str, str], prefix: Sequence[str] = ()
    ) -> None:
        full = dict(env)
        full.update(
            SWARM_NODE_ID=self.name,
            SWARM_SHARD_INDEX=str(self.index),
            SWARM_NODE_KEY_SEED=self.seed,
            SWARM_LISTEN_HOST=self.host,
            SWARM_LISTEN_PORT=str(self.port),
            SWARM_CHECKPOINT_DIR=str(self.ckpt_dir),
            SWARM_BOOTSTRAP_PEERS=",".join(bootstrap),
        )
        self.spawn([*prefix, sys.executable, "-m", "swarm_tune.runtime.cli", "node"], full)

    def final_metrics(self) -> dict[str, Any]:
        stopped = self.events("node.stopped")
        assert stopped, f"{self.name} logged no node.stopped:\n{self.tail()}"
        metrics: dict[str, Any] = stopped[-1]["metrics"]
        return metrics


def wait_until(cond: Callable[[], bool], timeout: float, what: str, procs: Sequence[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for p in procs:
            if p.proc is not None and p.proc.poll() not in (None, 0):
                raise AssertionError(f"{p.name} died ({p.proc.returncode}):\n{p.tail()}")
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in procs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def swarm_env(**extra: str) -> dict[str, str]:
    env = {
        "SWARM_RUN_ID": "chaos",
        "SWARM_MODEL_NAME": "tiny-gpt2",
        "SWARM_NUM_SHARDS": "3",
        "SWARM_LEARNING_RATE": "0.002",
        "SWARM_BATCH_SIZE": "8",
        "SWARM_ROUND_TIMEOUT_S": "10",
        "SWARM_HEARTBEAT_INTERVAL_S": "1",
        "SWARM_EVICTION_TIMEOUT_S": "8",
        "SWARM_MIN_PEERS": "2",
        "SWARM_QUORUM": "1.0",
        "SWARM_LOG_FORMAT": "json",
        "SWARM_LOG_LEVEL": "INFO",
        "SWARM_ENABLE_MDNS": "false",
        "SWARM_ENABLE_DHT": "false",
        "SWARM_CHECKPOINT_EVERY_ROUNDS": "0",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env
