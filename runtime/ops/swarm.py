"""``swarm-tune swarm up|down|kill|status``: the docker-compose swarm as local processes.

Why processes and not containers: these machines run no Docker engine, and the point of the
compose file (five honest nodes and one adversary on one machine, node0 as the bootstrap
peer with a fixed identity, a metrics port per node) does not need one. The same settings as
``docker/docker-compose.yml`` are used, on loopback ports instead of container networks, so
``swarm up`` here and ``docker compose up`` there show the same swarm on the dashboard.

Supervision follows compose's ``restart: unless-stopped`` with one change that makes the
protocol visible: a node that dies is restarted only after ``--restart-delay`` seconds
(default: longer than the eviction timeout), so an operator who kills a node *sees* it
evicted by the others and then rejoin. Children run in their own sessions so that exactly
one signal reaches each (a terminal's Ctrl-C goes to the supervisor, which SIGTERMs every
node once — a second signal would mean "hurry" to a node). ``swarm down`` signals the
supervisor through the state file in ``--dir``; pids are checked against their command line
before any signal, so a recycled pid is never hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "COMPOSE_ENV",
    "NODE0_SEED",
    "NodeSpec",
    "Supervisor",
    "down",
    "kill",
    "plan_swarm",
    "read_state",
    "status",
    "swarm_app",
    "up",
]

STATE_FILE = "swarm.json"
#: node0's identity in docker/docker-compose.yml (a public demo value): same peer id here.
NODE0_SEED = "1673468599b37a7071d6cd3df12114540fcfb1f869a210ca18a9a1a92a497826"
#: The compose file's shared node environment, minus container-only values.
COMPOSE_ENV: dict[str, str] = {
    "SWARM_RUN_ID": "compose-demo",
    "SWARM_MODEL_NAME": "tiny-gpt2",
    "SWARM_DEVICE": "cpu",
    "SWARM_BATCH_SIZE": "8",
    "SWARM_LEARNING_RATE": "0.001",
    "SWARM_LOCAL_STEPS": "2",
    "SWARM_MAX_ROUNDS": "0",
    "SWARM_ROUND_TIMEOUT_S": "20",
    "SWARM_HEARTBEAT_INTERVAL_S": "5",
    "SWARM_EVICTION_TIMEOUT_S": "30",
    "SWARM_MIN_PEERS": "3",
    "SWARM_QUORUM": "0.8",
    "SWARM_AGGREGATION": "flat",
    "SWARM_ENABLE_MDNS": "false",
    "SWARM_ENABLE_DHT": "false",  # compose: true; on one loopback host the bootstrap suffices
    "SWARM_CHECKPOINT_EVERY_ROUNDS": "10",
    "SWARM_LOG_FORMAT": "json",
    "SWARM_LOG_LEVEL": "INFO",
    # All loopback peers share 127.0.0.0/24: the per-subnet cap would halve everyone's weight.
    "SWARM_SUBNET_CAP": "1.0",
}
#: Set per node by the launcher; the caller's environment cannot override these.
PER_NODE = (
    "SWARM_NODE_ID",
    "SWARM_SHARD_INDEX",
    "SWARM_NUM_SHARDS",
    "SWARM_NODE_KEY_SEED",
    "SWARM_NODE_KEY_FILE",
    "SWARM_LISTEN_HOST",
    "SWARM_LISTEN_PORT",
    "SWARM_METRICS_PORT",
    "SWARM_CHECKPOINT_DIR",
    "SWARM_BOOTSTRAP_PEERS",
    "SWARM_ADVERSARY",
)


def node_seed(index: int) -> str:
    if index == 0:
        return NODE0_SEED
    return hashlib.sha256(f"swarm-tune/local-swarm/{index}".encode()).hexdigest()


@dataclass(slots=True)
class NodeSpec:
    name: str
    index: int
    peer_id: str
    p2p_port: int
    metrics_port: int
    adversary: str
    env: dict[str, str] = field(repr=False)
    pid: int | None = None
    restarts: int = 0

    @property
    def dashboard(self) -> str:
        return f"http://{self.env['SWARM_LISTEN_HOST']}:{self.metrics_port}/"

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        del d["env"]
        d["dashboard"] = self.dashboard
        return d


def plan_swarm(
    nodes: int,
    adversarial: int,
    *,
    base_port: int,
    metrics_base_port: int,
    host: str,
    directory: Path,
    environ: dict[str, str],
) -> list[NodeSpec]:
    """Specs for ``nodes`` processes: the last ``adversarial`` ones send noisy updates."""
    from swarm_tune.runtime.ops.peer_id import peer_id_from_seed

    if nodes < 1 or not 0 <= adversarial <= nodes:
        raise ValueError("need nodes >= 1 and 0 <= adversarial <= nodes")
    ports = [
        *range(base_port, base_port + nodes),
        *range(metrics_base_port, metrics_base_port + nodes),
    ]
    if len(set(ports)) != len(ports) or min(ports) < 1 or max(ports) > 65535:
        raise ValueError("P2P and metrics port ranges overlap or leave 1..65535")
    user = {k: v for k, v in environ.items() if k.startswith("SWARM_") and k not in PER_NODE}
    specs: list[NodeSpec] = []
    for i in range(nodes):
        bad = i >= nodes - adversarial
        name = "adversary" if bad and adversarial == 1 else (f"adversary{i}" if bad else f"node{i}")
        peer = peer_id_from_seed(bytes.fromhex(node_seed(i)))
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **COMPOSE_ENV, **user}
        env.update(
            SWARM_NODE_ID=name,
            SWARM_SHARD_INDEX=str(i),
            SWARM_NUM_SHARDS=str(nodes),
            SWARM_NODE_KEY_SEED=node_seed(i),
            SWARM_LISTEN_HOST=host,
            SWARM_LISTEN_PORT=str(base_port + i),
            SWARM_METRICS_PORT=str(metrics_base_port + i),
            SWARM_CHECKPOINT_DIR=str((directory / name / "checkpoints").resolve()),
            SWARM_BOOTSTRAP_PEERS=""
            if i == 0
            else f"/ip4/{host}/tcp/{base_port}/p2p/{specs[0].peer_id}",
            SWARM_ADVERSARY="noise" if bad else "none",
        )
        if bad:
            env.setdefault("SWARM_ADVERSARY_STRENGTH", "10")
        specs.append(
            NodeSpec(
                name, i, peer, base_port + i, metrics_base_port + i, env["SWARM_ADVERSARY"], env
            )
        )
    return specs


def _is_ours(pid: int) -> bool:
    """True if ``pid`` is alive and runs swarm-tune (guards against recycled pids)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"swarm_tune" in cmd or b"swarm-tune" in cmd


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


class Supervisor:
    """Starts the nodes, restarts dead ones after a delay, stops all on SIGINT/SIGTERM."""

    def __init__(
        self, specs: list[NodeSpec], directory: Path, restart_delay: float, grace: float = 30.0
    ) -> None:
        self.specs = specs
        self.dir = directory
        self.restart_delay = restart_delay
        self.grace = grace
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._due: dict[str, float] = {}  # name -> monotonic time to restart at
        self._ready: set[str] = set()
        self._stop = False

    def _start(self, spec: NodeSpec) -> None:
        d = self.dir / spec.name
        d.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env}
        with (d / "node.out").open("wb") as out, (d / "node.log").open("ab") as err:
            self.procs[spec.name] = subprocess.Popen(
                [sys.executable, "-m", "swarm_tune.runtime.cli", "node"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # our signals only, never the terminal's
            )
        spec.pid = self.procs[spec.name].pid
        self._ready.discard(spec.name)
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "restart_delay_s": self.restart_delay,
            "nodes": [s.public() for s in self.specs],
        }
        tmp = self.dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.dir / STATE_FILE)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = True

    def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for spec in self.specs:
                self._start(spec)
                _say(f"started {spec.name} (pid {spec.pid}) {_role(spec)}")
            while not self._stop:
                self._tick()
                time.sleep(0.2)
            return self._stop_all()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            (self.dir / STATE_FILE).unlink(missing_ok=True)

    def _tick(self) -> None:
        now = time.monotonic()
        for spec in self.specs:
            proc = self.procs[spec.name]
            if spec.name not in self._ready and _ready_line(self.dir / spec.name / "node.out"):
                self._ready.add(spec.name)
                _say(f"{spec.name} ready  peer {spec.peer_id}  dashboard {spec.dashboard}")
                if len(self._ready) == len(self.specs) and not any(s.restarts for s in self.specs):
                    _say(_help(self.specs, self.dir, self.restart_delay))
            code = proc.poll()
            if code is None:
                continue
            if spec.name not in self._due:
                if self.restart_delay < 0:
                    continue
                self._due[spec.name] = now + self.restart_delay
                _say(
                    f"{spec.name} exited ({_describe(code)}); restarting in {self.restart_delay:g}s"
                )
            elif now >= self._due[spec.name]:
                del self._due[spec.name]
                spec.restarts += 1
                self._start(spec)
                _say(f"restarted {spec.name} (pid {spec.pid}, restart #{spec.restarts})")

    def _stop_all(self) -> int:
        _say("stopping the swarm (SIGTERM to every node; final checkpoints are written)")
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        _say("swarm stopped")
        return 0


def _ready_line(path: Path) -> bool:
    try:
        return b"SWARM_READY" in path.read_bytes()
    except OSError:
        return False


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _role(spec: NodeSpec) -> str:
    return "adversary=noise" if spec.adversary != "none" else "honest"


def _say(text: str) -> None:
    print(text, flush=True)


def _help(specs: list[NodeSpec], directory: Path, delay: float) -> str:
    d = str(directory)
    victim = specs[min(2, len(specs) - 1)].name  # an honest node when there is one
    return (
        f"all {len(specs)} nodes up. Dashboards: {specs[0].dashboard} (node0) ... "
        f"{specs[-1].dashboard}\n"
        f"  kill a node:   swarm-tune swarm kill {victim} --dir {d}    "
        f"(SIGKILL; restarted after {delay:g}s)\n"
        f"  watch it:      evicted on the other dashboards, then live again after restart\n"
        f"  stop:          Ctrl-C here, or swarm-tune swarm down --dir {d}"
    )


# -- commands -----------------------------------------------------------------------------

swarm_app = typer.Typer(
    help="A local swarm of real node processes on loopback (docker-compose without Docker).",
    no_args_is_help=True,
)
DirOpt = Annotated[Path, typer.Option("--dir", help="Logs, checkpoints and the pid file.")]


@swarm_app.command("up")
def up(
    nodes: Annotated[int, typer.Option("--nodes", help="Number of nodes.")] = 6,
    adversarial: Annotated[int, typer.Option("--adversarial", help="Noisy nodes.")] = 1,
    base_port: Annotated[int, typer.Option("--base-port", help="P2P port of node0.")] = 4001,
    metrics_base_port: Annotated[
        int, typer.Option("--metrics-base-port", help="Metrics/dashboard port of node0.")
    ] = 9100,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    directory: DirOpt = Path(".swarm"),
    restart_delay: Annotated[
        float | None,
        typer.Option("--restart-delay", help="Seconds before a dead node restarts; -1 = never."),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background.")] = False,
) -> None:
    """Start the swarm (5 honest + 1 adversarial by default) and supervise it."""
    existing = read_state(directory)
    if existing and _is_ours(int(existing.get("supervisor_pid", 0))):
        typer.echo(
            f"a swarm already runs from {directory} (swarm-tune swarm down --dir {directory})",
            err=True,
        )
        raise typer.Exit(1)
    try:
        specs = plan_swarm(
            nodes,
            adversarial,
            base_port=base_port,
            metrics_base_port=metrics_base_port,
            host=host,
            directory=directory,
            environ=dict(os.environ),
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if restart_delay is None:  # compose restarts at once; we wait out the eviction timeout
        restart_delay = float(specs[0].env["SWARM_EVICTION_TIMEOUT_S"]) + 15.0
    if detach:
        raise typer.Exit(_detach(directory, restart_delay, len(specs)))
    raise typer.Exit(Supervisor(specs, directory, restart_delay).run())


def _detach(directory: Path, restart_delay: float, count: int) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    args = [a for a in sys.argv[1:] if a != "--detach"]
    if "--restart-delay" not in args:
        args += ["--restart-delay", str(restart_delay)]
    log = directory / "supervisor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarm_tune.runtime.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "all " in text and "nodes up" in text:
            typer.echo(text)
            typer.echo(f"supervisor pid {proc.pid}; log {log}")
            return 0
        if proc.poll() is not None:
            typer.echo(text, err=True)
            return 1
        time.sleep(0.5)
    typer.echo(f"swarm not ready after 300 s; see {log}", err=True)
    return 1


@swarm_app.command("down")
def down(directory: DirOpt = Path(".swarm")) -> None:
    """Stop the swarm started from ``--dir`` (its supervisor stops every node)."""
    state = read_state(directory)
    if state is None:
        typer.echo(f"no swarm state in {directory}", err=True)
        raise typer.Exit(1)
    sup = int(state.get("supervisor_pid", 0))
    if _is_ours(sup):
        os.kill(sup, signal.SIGTERM)
        if _wait_gone([sup], 90):
            typer.echo("swarm stopped")
            return
    # No supervisor (killed?): stop the nodes ourselves.
    pids = [int(n["pid"]) for n in state.get("nodes", []) if n.get("pid")]
    pids = [p for p in pids if _is_ours(p)]
    for p in pids:
        os.kill(p, signal.SIGTERM)
    if not _wait_gone(pids, 60):
        for p in pids:
            if _is_ours(p):
                os.kill(p, signal.SIGKILL)
    (directory / STATE_FILE).unlink(missing_ok=True)
    typer.echo(f"stopped {len(pids)} orphaned node(s)")


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_is_ours(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


@swarm_app.command("kill")
def kill(
    name: Annotated[str, typer.Argument(help="Node name, e.g. node2 or adversary.")],
    directory: DirOpt = Path(".swarm"),
) -> None:
    """SIGKILL one node (a crash): the others evict it, the supervisor restarts it later."""
    state = read_state(directory)
    nodes = {n["name"]: n for n in (state or {}).get("nodes", [])}
    if name not in nodes:
        typer.echo(
            f"no node {name!r} in {directory} (have: {', '.join(nodes) or 'none'})", err=True
        )
        raise typer.Exit(1)
    pid = int(nodes[name].get("pid") or 0)
    if not _is_ours(pid):
        typer.echo(f"{name} is not running", err=True)
        raise typer.Exit(1)
    os.kill(pid, signal.SIGKILL)
    delay = (state or {}).get("restart_delay_s")
    typer.echo(f"killed {name} (pid {pid}); the supervisor restarts it after {delay}s")


@swarm_app.command("status")
def status(directory: DirOpt = Path(".swarm")) -> None:
    """One line per node: pid, running or not, dashboard URL."""
    state = read_state(directory)
    if state is None:
        typer.echo(f"no swarm state in {directory}", err=True)
        raise typer.Exit(1)
    for n in state.get("nodes", []):
        alive = "running" if _is_ours(int(n.get("pid") or 0)) else "down"
        typer.echo(f"{n['name']:<10} pid {n['pid']:<8} {alive:<8} {n['dashboard']}  {n['peer_id']}")
