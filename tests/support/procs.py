"""Real child processes for the integration tests: ``swarm-tune node`` and friends, watched live.

Why one module: the node, chaos and dashboard tests all start real processes and judge them by
what they log, and they need the same machinery: a fixed key seed per node (stable peer id,
so bootstrap addresses can be written before anything runs), reader threads that collect
stdout lines and JSON log records from stderr as they arrive (a test waits for "node 2 closed
round 5" instead of sleeping), and a ``wait_until`` with a hard timeout that fails fast, with
log tails, when a process dies unexpectedly. Area-specific parts (namespace prefixes, env
presets for emulated WANs, port blocks for the launcher) stay next to their tests.

Imported as ``procs``: tests/conftest.py puts tests/support on sys.path (pytest runs in rootdir
mode without packages, so there is no ``tests.`` package to import from).
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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


# Process deadlines only bite on failure (a healthy run ends as soon as its condition holds),
# so they are generous, and all of them stretch by one factor: CI shares its 2-core box with
# other work, and a test must not turn a slow box into a failure. SWARM_TEST_PATIENCE raises
# it further on a very slow machine.
PATIENCE = max(1.0, float(os.environ.get("SWARM_TEST_PATIENCE", "2")))


def patience(seconds: float) -> float:
    """``seconds`` stretched by the box-wide deadline factor (see PATIENCE)."""
    return seconds * PATIENCE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed_hex(i: int, offset: int = 1) -> str:
    """Key seed of node ``i``: one repeated byte, so peer ids are stable across runs."""
    return f"{i + offset:02x}" * 32


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS from /proc), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


#: Every process spawned in this pytest worker since the last ``take_spawned``: the report
#: hook in tests/conftest.py attaches their log tails to a failed test (see ``log_report``).
_SPAWNED: list[Proc] = []
#: Lines of each process's stderr a failed test's report carries: its last ones, and its
#: first MEMBERSHIP_LINES that name one of MEMBERSHIP (who met whom, when, what was lost).
REPORT_TAIL = 40
MEMBERSHIP_LINES = 40
MEMBERSHIP = (
    "net.connected",
    "net.disconnected",
    "peer.joined",
    "peer.evicted",
    "send.failed",
    "small message",
    "node.waiting_for_peers",
    "node.started_rounds",
)


def spawned() -> list[Proc]:
    """The processes spawned since the last ``take_spawned`` (the current test's)."""
    return list(dict.fromkeys(_SPAWNED))


def take_spawned() -> list[Proc]:
    """``spawned()``, forgotten."""
    out = spawned()
    _SPAWNED.clear()
    return out


def log_report(started: Sequence[Proc], failed: bool, keep_dir: str | None) -> str:
    """What a test leaves of its processes' logs. Failed: each one's last REPORT_TAIL stderr
    lines (the report section; the nodes of a failed real-node test are otherwise gone with
    their logs, and "n2 joined late" cannot be explained from assertions). ``keep_dir`` (the
    env SWARM_TEST_LOG_DIR, for reproduction runs): every process's whole stderr written
    there, failed or not, one file per process, the file names returned in the report."""
    parts: list[str] = []
    if keep_dir:
        folder = Path(keep_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for p in started:
            dest = folder / f"{os.getpid()}-{time.time_ns()}-{p.name}.log"
            dest.write_text("".join(p.err_lines()))
            parts.append(f"{p.name}: whole log in {dest}")
    for p in started if failed else ():
        met = [line for line in p.err_lines() if any(m in line for m in MEMBERSHIP)]
        parts.append(f"--- {p.name}, membership\n{''.join(met[:MEMBERSHIP_LINES])}")
        parts.append(f"--- {p.name}, last {REPORT_TAIL} lines\n{p.tail(REPORT_TAIL)}")
    return "\n".join(parts)


class Proc:
    """A child process whose stdout lines and JSON stderr records are collected live."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stdout: list[str] = []
        self.records: list[Record] = []
        self.raw_err: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        # Set by kill(): a process the test SIGKILLed itself is not a crash to report.
        self.killed = False
        self._lock = threading.Lock()

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path = REPO) -> None:
        full = dict(os.environ)
        full.update(env)
        self.killed = False
        _SPAWNED.append(self)
        self.proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
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

    def crashed(self) -> bool:
        """Exited non-zero without the test having killed it."""
        return self.proc is not None and self.proc.poll() not in (None, 0) and not self.killed

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

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Exit code, waiting at most ``timeout`` seconds stretched by PATIENCE; a process
        still running then fails the test with its last log lines (a bare TimeoutExpired
        said nothing of where it was stuck)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=patience(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {patience(timeout):.0f} s:\n{self.tail(60)}"
            ) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
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

    def err_lines(self) -> list[str]:
        """Every stderr line so far (each with its newline)."""
        with self._lock:
            return list(self.raw_err)


class NodeProc(Proc):
    """One ``swarm-tune node`` with key seed ``seed_hex(index, seed_offset)``.

    ``env`` holds its SWARM_* settings (kept, so a restart reuses them); the per-node ones
    (id, shard, key, listen address, checkpoint folder, bootstrap peers) are set here.
    ``prefix`` runs it under another command, e.g. ``ip netns exec NS``; ``python`` and
    ``cwd`` run another installation (the wheel test's fresh venv, outside the checkout).
    """

    def __init__(
        self,
        index: int,
        port: int,
        workdir: Path,
        env: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        seed_offset: int = 1,
        prefix: Sequence[str] = (),
        python: str = sys.executable,
        cwd: Path = REPO,
    ) -> None:
        super().__init__(f"n{index}")
        self.python = python
        self.cwd = cwd
        self.index = index
        self.host = host
        self.port = port
        self.seed = seed_hex(index, seed_offset)
        self.peer_id = peer_id_from_seed(bytes.fromhex(self.seed))
        self.ckpt_dir = workdir / f"ckpt-{index}"
        self.env = dict(env)
        self.prefix = list(prefix)

    @property
    def addr(self) -> str:
        return self.addr_via(self.host)

    def addr_via(self, host: str) -> str:
        """This node's multiaddr as dialled through ``host`` (itself, or a stand-in)."""
        return f"/ip4/{host}/tcp/{self.port}/p2p/{self.peer_id}"

    def start(self, bootstrap: Sequence[str]) -> None:
        env = dict(self.env)
        env.update(
            SWARM_NODE_ID=self.name,
            SWARM_SHARD_INDEX=str(self.index),
            SWARM_NODE_KEY_SEED=self.seed,
            SWARM_LISTEN_HOST=self.host,
            SWARM_LISTEN_PORT=str(self.port),
            SWARM_CHECKPOINT_DIR=str(self.ckpt_dir),
            SWARM_BOOTSTRAP_PEERS=",".join(bootstrap),
        )
        # A restart is judged on its own logs (stderr tails keep the history for failures).
        with self._lock:
            self.records = []
            self.stdout = []
        argv = [*self.prefix, self.python, "-m", "swarm_tune.runtime.cli", "node"]
        self.spawn(argv, env, self.cwd)

    def closed_rounds(self) -> list[Record]:
        return self.events("round.closed")

    def committed(self) -> list[Record]:
        return [r for r in self.closed_rounds() if r["outcome"] == "average"]

    def max_closed(self) -> int:
        return max((int(r["round"]) for r in self.closed_rounds()), default=-1)

    def final_metrics(self) -> dict[str, Any]:
        stopped = self.events("node.stopped")
        assert stopped, f"{self.name} logged no node.stopped:\n{self.tail()}"
        metrics: dict[str, Any] = stopped[-1]["metrics"]
        return metrics


@contextmanager
def full_mesh(nodes: Sequence[NodeProc]) -> Iterator[Sequence[NodeProc]]:
    """Start every node with all the others as its bootstrap peers; kill them all on the way out
    (a failing test or benchmark must not leave nodes running)."""
    try:
        for node in nodes:
            node.start([p.addr for p in nodes if p is not node])
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def wait_all_exit(nodes: Sequence[Proc], timeout: float) -> None:
    """Wait for every process to exit 0; the first that does not fails with its log tail."""
    for node in nodes:
        code = node.wait_exit(timeout=timeout)
        assert code == 0, f"{node.name} exited {code}:\n{node.tail()}"


def run_node_once(env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``swarm-tune node`` run to its end with ``env`` on top of this process's environment:
    for the refusals that must exit 2 before the node listens (no ports are taken, so the
    env only needs what the refusal is about)."""
    quiet = {
        "SWARM_LISTEN_PORT": "0",
        "SWARM_METRICS_PORT": "0",
        "SWARM_ENABLE_MDNS": "false",
        "SWARM_ENABLE_DHT": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "swarm_tune.runtime.cli", "node"],
        env={**os.environ, **quiet, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=patience(180),
        check=False,
    )


def wait_until(
    cond: Callable[[], bool],
    timeout: float,
    what: str,
    procs: Sequence[Proc] = (),
    *,
    interval: float = 0.2,
    context: Callable[[], str] | None = None,
) -> None:
    """Poll ``cond`` until true; fail fast if one of ``procs`` crashed, else after ``timeout``.

    The timeout message carries ``context()`` (default: the last log lines of ``procs``).
    """
    timeout = patience(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for p in procs:
            if p.crashed():
                assert p.proc is not None
                raise AssertionError(f"{p.name} died ({p.proc.returncode}):\n{p.tail()}")
        time.sleep(interval)
    if context is None:
        detail = "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in procs)
    else:
        detail = context()
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")


def swarm_env(run_id: str, preset: Mapping[str, str], **extra: str) -> dict[str, str]:
    """Settings every test swarm shares (tiny-gpt2, 3 shards, JSON logs, no discovery), then
    the area's ``preset`` (its protocol timeouts), then the test's own ``extra``."""
    env = {
        "SWARM_RUN_ID": run_id,
        "SWARM_MODEL_NAME": "tiny-gpt2",
        "SWARM_NUM_SHARDS": "3",
        "SWARM_LEARNING_RATE": "0.002",
        "SWARM_BATCH_SIZE": "8",
        "SWARM_HEARTBEAT_INTERVAL_S": "1",
        "SWARM_MIN_PEERS": "2",
        "SWARM_QUORUM": "1.0",
        "SWARM_LOG_FORMAT": "json",
        "SWARM_LOG_LEVEL": "INFO",
        "SWARM_ENABLE_MDNS": "false",
        "SWARM_ENABLE_DHT": "false",
        # Several nodes share a small machine: one thread each keeps them from fighting.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.update(preset)
    env.update(extra)
    return env


# The node and dashboard tests' swarm: all peers on 127.0.0.1, quick rounds, checkpoints.
LOOPBACK = {
    "SWARM_ROUND_TIMEOUT_S": "8",
    "SWARM_EVICTION_TIMEOUT_S": "6",
    # Every loopback peer shares 127.0.0.0/24: the subnet cap would give each node's own
    # update half the weight and make replicas average different things on purpose.
    "SWARM_SUBNET_CAP": "1.0",
    "SWARM_CHECKPOINT_EVERY_ROUNDS": "2",
}


def loopback_env(**extra: str) -> dict[str, str]:
    return swarm_env("node-test", LOOPBACK, **extra)


def bench_env(rounds: int, **extra: str) -> dict[str, str]:
    """The real-node benchmarks' swarm: loopback, ``rounds`` rounds, timeouts long enough that a
    slow step on a busy box never turns a measured round into a fallback, no checkpoints."""
    return loopback_env(
        SWARM_MAX_ROUNDS=str(rounds),
        SWARM_ROUND_TIMEOUT_S="120",
        SWARM_EVICTION_TIMEOUT_S="120",
        SWARM_CHECKPOINT_EVERY_ROUNDS="0",
        **extra,
    )
