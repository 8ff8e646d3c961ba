"""The real twin of a scenario: N ``swarm-tune node`` processes on the scenario's links.

Sim-to-real calibration (issue 15) holds the simulator against the runtime it models. This
module runs the runtime side: one network namespace per node on a throwaway WAN
(sim/netns_wan.py: tc tbf bandwidth both ways, nftables loss, the userspace delay relay for
latency), the scenario's ``protocol:`` block as the nodes' SWARM_* settings (the same
``protocol_env`` run manifests use), tiny-gpt2 on CPU, one thread each. It returns every
node's structured log records; sim/calibrate.py reads the figures out of them.

Each node's stderr (JSON log lines) goes to a file in the work folder and is parsed once the
node exited: nothing here needs a reader thread, and a failed run leaves the logs behind.
Namespaces and processes are removed on the way out, failure included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from swarm_tune.runtime.ops.peer_id import peer_id_from_seed
from swarm_tune.runtime.ops.protocol_fields import protocol_env
from swarm_tune.sim.host_cpu import CpuSample, HostCpuSampler, machine_cores
from swarm_tune.sim.netns_wan import Wan
from swarm_tune.sim.scenario import Scenario

__all__ = [
    "CalibrationUnavailable",
    "NodeLog",
    "TwinRun",
    "WanHook",
    "require_netns",
    "run_real_twin",
    "twin_links",
]

NODE_PORT = 4001
KEY_SEED_OFFSET = 0xC1  # peer ids of their own, apart from the tests' nodes
RELAY_READY = "LATENCY_RELAY_READY"

# What every twin node runs with besides the scenario's protocol block: the runtime's small
# test model, JSON logs, no discovery services (the bootstrap list is the full mesh), and
# one math thread each (six nodes share a small machine).
BASE_ENV = {
    "SWARM_MODEL_NAME": "tiny-gpt2",
    "SWARM_LEARNING_RATE": "0.002",
    "SWARM_BATCH_SIZE": "8",
    "SWARM_LOG_FORMAT": "json",
    "SWARM_LOG_LEVEL": "INFO",
    "SWARM_ENABLE_MDNS": "false",
    "SWARM_ENABLE_DHT": "false",
    "SWARM_CHECKPOINT_EVERY_ROUNDS": "0",
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

Record = dict[str, Any]


class CalibrationUnavailable(RuntimeError):
    """This machine cannot run the real twin (no root, no ip/tc/nft, no tbf or nftables)."""


@dataclass(frozen=True)
class NodeLog:
    """One real node's structured log, in order."""

    name: str
    records: list[Record]

    def events(self, name: str) -> list[Record]:
        return [r for r in self.records if r.get("event") == name]


@dataclass(frozen=True)
class TwinRun:
    """Every node's log, and the machine's CPU while they ran (sim/host_cpu.py)."""

    logs: list[NodeLog]
    cpu: list[CpuSample]
    cores: int


def require_netns() -> None:
    """Raise CalibrationUnavailable, with one line saying why, unless the twin can run."""
    if os.geteuid() != 0:
        raise CalibrationUnavailable("the real twin needs root (network namespaces, tc, nftables)")
    missing = [t for t in ("ip", "tc", "nft") if shutil.which(t) is None]
    if missing:
        raise CalibrationUnavailable(f"the real twin needs {', '.join(missing)} on PATH")


def twin_links(sc: Scenario) -> tuple[float, float, float]:
    """(Mbit/s, one-way ms, loss) of a scenario the twin can build: one symmetric link class
    and one latency for every pair (``topology.kind: full``)."""
    classes = sc.links.bandwidth
    if sc.topology.kind != "full" or len(classes) != 1:
        raise ValueError("the real twin needs topology kind 'full' and one bandwidth class")
    c = classes[0]
    if c.uplink_mbps != c.downlink_mbps:
        raise ValueError("the real twin shapes both directions alike: uplink == downlink")
    if sc.nodes.count > 100:
        raise ValueError("the real twin runs one process per node: at most 100 nodes")
    return c.uplink_mbps, sc.topology.latency_ms, sc.links.loss


def twin_env(sc: Scenario) -> dict[str, str]:
    """The nodes' settings: the scenario's protocol block, except that rounds start only once
    every node is there. The sim's nodes all start at t = 0, so its first round has everyone;
    real processes start up to seconds apart on a busy machine, and with the scenario's
    ``min_peers`` the first ones ran rounds without the last, which then joined a round
    behind (a stale contribution, 20 s rounds): not the run the sim predicts."""
    cfg = sc.protocol_config()
    everyone = replace(cfg, min_peers=max(cfg.min_peers, sc.nodes.count))
    proto = {f"SWARM_{k.upper()}": v for k, v in protocol_env(everyone).items()}
    return {
        **BASE_ENV,
        **proto,
        "SWARM_RUN_ID": f"calibrate-{sc.name}",
        "SWARM_NUM_SHARDS": str(sc.nodes.count),
        "SWARM_MAX_ROUNDS": str(sc.rounds.target),
    }


class _Node:
    def __init__(self, index: int, wan: Wan, workdir: Path) -> None:
        self.index = index
        self.name = f"n{index}"
        self.seed = f"{index + KEY_SEED_OFFSET:02x}" * 32
        self.peer_id = peer_id_from_seed(bytes.fromhex(self.seed))
        self.wan = wan
        self.err = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def addr(self) -> str:  # as its peers dial it: through its stand-in (the delay line)
        return f"/ip4/{self.wan.standin_ip(self.index)}/tcp/{NODE_PORT}/p2p/{self.peer_id}"

    def start(self, env: Mapping[str, str], bootstrap: list[str], workdir: Path) -> None:
        full = {
            **os.environ,
            **env,
            "SWARM_NODE_ID": self.name,
            "SWARM_SHARD_INDEX": str(self.index),
            "SWARM_NODE_KEY_SEED": self.seed,
            "SWARM_LISTEN_HOST": self.wan.real_ip(self.index),
            "SWARM_LISTEN_PORT": str(NODE_PORT),
            "SWARM_CHECKPOINT_DIR": str(workdir / f"ckpt-{self.index}"),
            "SWARM_BOOTSTRAP_PEERS": ",".join(bootstrap),
        }
        argv = [
            *self.wan.exec_prefix(self.wan.ns(self.index)),
            sys.executable, "-m", "swarm_tune.runtime.cli", "node",
        ]  # fmt: skip
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, env=full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )

    def log(self) -> NodeLog:
        records = []
        for line in self.err.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return NodeLog(self.name, records)

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.err.read_text(errors="replace").splitlines()[-n:])


def _kill(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _start_relay(wan: Wan, delay_ms: float, workdir: Path) -> subprocess.Popen[str]:
    """The delay relay is the emulated network, not the system under test: one Python process
    carries every link's bytes, and a relay starved of CPU on a shared machine is a slower
    network than the scenario says. It runs at the highest priority ``nice`` allows (root);
    the nodes keep theirs. Measured once (lan40, load 28-29): median 614 KB send 4.2 s
    without, 2.0 s with (link time of 5 concurrent copies: 0.6 s)."""
    relay = subprocess.Popen(
        ["nice", "-n", "-20", *wan.relay_argv(sys.executable, delay_ms)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(workdir / "relay.log").open("w"),
        text=True,
    )
    assert relay.stdout is not None
    line = relay.stdout.readline()  # blocks until it listens or dies
    if not line.startswith(RELAY_READY):
        _kill(relay)
        raise RuntimeError(f"the latency relay did not start: {line!r}")
    return relay


WanHook = Callable[[Wan], None]


def run_real_twin(
    sc: Scenario,
    workdir: Path,
    timeout_s: float = 900.0,
    on_ready: WanHook | None = None,
    on_done: WanHook | None = None,
) -> TwinRun:
    """Run the scenario's real twin to ``rounds.target``: every node's log and the CPU the
    rest of the machine used meanwhile. ``on_ready`` sees the WAN once the relay runs, before
    any node starts; ``on_done`` once every node exited cleanly, before it is torn down (the
    chaos test probes and counts there).

    CalibrationUnavailable when the machine lacks what it needs (the message is one line);
    RuntimeError when a node fails (with its log's tail)."""
    require_netns()
    mbps, latency_ms, loss = twin_links(sc)
    workdir.mkdir(parents=True, exist_ok=True)
    wan = Wan(hosts=sc.nodes.count, rate=f"{mbps:g}mbit", loss_pct=round(100 * loss))
    nodes = [_Node(i, wan, workdir) for i in range(sc.nodes.count)]
    env = twin_env(sc)
    relay: subprocess.Popen[str] | None = None
    sampler = HostCpuSampler(lambda: [n.proc.pid for n in nodes if n.proc is not None])
    try:
        try:
            wan.up()
        except RuntimeError as exc:  # e.g. a kernel without tbf or nftables
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CalibrationUnavailable(f"cannot build the emulated WAN: {first}") from exc
        relay = _start_relay(wan, latency_ms, workdir)
        if on_ready is not None:
            on_ready(wan)
        for node in nodes:
            node.start(env, [p.addr() for p in nodes if p is not node], workdir)
        sampler.start()
        deadline = time.monotonic() + timeout_s
        for node in nodes:
            assert node.proc is not None
            try:
                code = node.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{node.name} still running after {timeout_s:.0f} s") from None
            if code != 0:
                raise RuntimeError(f"{node.name} exited {code}:\n{node.tail()}")
        if on_done is not None:
            on_done(wan)
    finally:
        sampler.stop()
        for node in nodes:
            _kill(node.proc)
        _kill(relay)
        wan.down()
    return TwinRun([n.log() for n in nodes], sampler.samples, machine_cores())
