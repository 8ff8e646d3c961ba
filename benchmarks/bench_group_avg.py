"""Averaging one big fp32 update among N real loopback processes: group rounds vs hivemind.

Issue 13, benchmark (b). For each N in ``--sizes`` it runs, in the same run:

* **swarm-tune**: N processes, each a real node stack (Ed25519 identity, libp2p host, the
  bulk plane, ``NodeDriver``, the protocol core with ``strategy: group`` and the weighted
  mean) whose learner hands out a seeded update of ``--mb`` MB (fp32) plus the round number
  (the same bytes every round would be a replay, which flat rounds reject: ``--flat``);
* **hivemind 1.1.12** (``--hivemind-python``: the python of a throwaway venv where it is
  installed; it is not a project dependency): N processes, each a DHT peer and a
  ``DecentralizedAverager`` over the same tensors (``target_group_size`` = N).

It prints per-peer goodput (update bytes / seconds from the update being ready to the
average being in hand: each peer's median over the measured rounds, ``WARM`` to ``ROUNDS``
- 1, then the median over peers; for hivemind the time of ``step()``), the max abs error of
every peer's result against the exact mean (float64), whether every peer holds the same bits
in every measured round, and the ratio swarm-tune / hivemind (goal >= 2).

What the harness does between rounds is alike for both systems and takes no fresh memory:
each child writes its update into memory it reuses (ours: two buffers in turn; hivemind's:
``copy_`` into the averager's tensor) and copies each measured round's result into a slot
allocated and written before the run (``touched``); results are checked after the run.
Until issue 13's h13a our learner made a new 124 MB update and both kept a new 124 MB clone
each round, so every round began and ended with fresh pages for the kernel to map (the
largest source of page faults in a perf record of an N = 2 run), and only rounds 2-3 were
measured.
A child that gives no result within ``--timeout`` is killed and named in the table;
``--logs DIR`` keeps every child's output (its node log, with each round's CPU) there.

Usage::

    .venv/bin/python benchmarks/bench_group_avg.py --sizes 2,4,8 --mb 124 \\
        --hivemind-python /tmp/hm/venv/bin/python
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

MB = 1_000_000
ROUNDS = 6  # rounds 0..5, each system alike; rounds from WARM on are measured
# Round 0 waits for everyone to start (and syncs state); round 1 still carries its skew: a
# peer's clock for round 1 starts when it closed round 0, while a slower peer may still be
# in round 0 (seen: 2.5-4 s of a 124 MB N = 2 round 1 was the other peer finishing round 0,
# whose first transfers land in cold memory). From round 2 on, every peer is in step.
# Four measured rounds, not two: what a user gets is the steady state of many rounds, and
# with two the "median" of a peer was the mean of a round that still met some memory for
# the first time (a send buffer for a first audit piece, seen in round 2 or 3) and one that
# did not.
WARM = 2


def touched(numel: int) -> Any:
    """A float32 tensor of ``numel`` whose pages are all mapped: between-round memory of
    either system's child (kept results, our learner's update) is taken and written once
    before the run, so no round of either system pays the kernel for fresh pages of the
    harness's own (it was 2 x 124 MB of 4 KiB faults a round for ours, ~0.2-0.6 s of system
    time between rounds, and on a freshly booted VM first-touched memory costs up to ~7 s
    per GiB; measured for issue 13)."""
    import torch

    return torch.zeros(numel).fill_(1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def key_seed(i: int) -> bytes:
    return bytes([i + 1]) * 32


def numel_of(mb: float) -> int:
    return int(mb * MB) // 4


def exact_mean(n: int, numel: int) -> Any:
    import torch

    acc = torch.zeros(numel, dtype=torch.float64)
    for i in range(n):
        acc += update_of(i, numel).double()
    return acc / n


def max_abs_err(got: Any, mean: Any, shift: float = 0.0) -> float:
    """max |got - mean| in float64, 1M values at a time: a whole-vector float64 difference
    of a 124 MB update costs ~1 s of CPU per peer and round on a 2-core box, which the
    peers still averaging would pay for. ``shift``: a constant added to the mean (our
    learner's per-round offset). (Its source also runs in the hivemind child.)"""
    step = 1 << 20
    worst = 0.0
    for lo in range(0, got.numel(), step):
        part = got[lo : lo + step].double() - mean[lo : lo + step] - shift
        worst = max(worst, float(part.abs().max()))
    return worst


def update_of(i: int, numel: int) -> Any:
    import torch

    return torch.randn(numel, generator=torch.Generator().manual_seed(1000 + i))


# -- swarm-tune child -------------------------------------------------------------------


class FixedLearner:
    """A learner whose update is one seeded vector plus the round number (distinct bytes each
    round, one exact mean per round); it times and checks averages."""

    def __init__(self, index: int, n: int, numel: int) -> None:
        import torch

        self.index, self.n, self.numel = index, n, numel
        self.params = {"w": torch.zeros(numel)}
        self.update = update_of(index, numel)
        # Two update buffers, used in turn: round r's update may be referred to by the node
        # until round r + 1 starts (its group round keeps its pieces), never later.
        self.buffers = [touched(numel), touched(numel)]
        self.ready_at: dict[int, float] = {}
        self.cpu_at: dict[int, float] = {}
        self.sys_at: dict[int, float] = {}  # the kernel's share (sockets, page faults)
        self.flt_at: dict[int, int] = {}  # minor page faults (fresh memory) at the start
        self.round = 0
        self.results: list[dict[str, Any]] = []
        # Each measured round's average, checked once the run is over.
        self.kept: list[Any] = [touched(numel) for _ in range(ROUNDS - WARM)]

    @property
    def dataset_size(self) -> int:
        return 1

    def parameters(self) -> Any:
        return self.params

    def compute_update(self, kind: str) -> Any:
        import torch

        from swarm_tune.runtime.training.learner import LocalResult

        # The update exists before the clock starts (hivemind's child copies its update in
        # before it starts timing, too): averaging is what is measured, not this addition.
        # Written into memory the learner reuses, as hivemind's child copies its update into
        # the averager's tensor.
        update = torch.add(self.update, float(self.round), out=self.buffers[self.round % 2])
        self.ready_at[self.round] = time.perf_counter()
        self.cpu_at[self.round] = time.process_time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.sys_at[self.round], self.flt_at[self.round] = usage.ru_stime, usage.ru_minflt
        return LocalResult({"w": update}, 0.0, 1)

    def apply_average(self, kind: str, averaged: Any) -> None:
        seconds = time.perf_counter() - self.ready_at.get(self.round, time.perf_counter())
        cpu = time.process_time() - self.cpu_at.get(self.round, time.process_time())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        sys_s = usage.ru_stime - self.sys_at.get(self.round, 0.0)
        faults = usage.ru_minflt - self.flt_at.get(self.round, 0)
        self.results.append(
            {"round": self.round, "seconds": seconds, "cpu": cpu, "sys": sys_s, "minflt": faults}
        )
        if self.round >= WARM:  # lent for the call only (Learner contract): copied
            self.kept[self.round - WARM].copy_(averaged["w"])
        self.round += 1

    def check(self) -> None:
        """Error and digest of every round's average, after the run: checked during it, the
        check's CPU (~1 s a round per peer, for either system) slowed the peers still
        averaging and the next round's start."""
        import hashlib

        mean = exact_mean(self.n, self.numel)
        measured = [row for row in self.results if row["round"] >= WARM]
        for row, got in zip(measured, self.kept, strict=True):
            row["err"] = max_abs_err(got, mean, shift=float(row["round"]))
            row["digest"] = hashlib.blake2b(got.numpy().tobytes(), digest_size=8).hexdigest()

    def load_state(self, params: Any) -> None:
        pass

    def outer_state(self) -> Any:
        return {}

    def load_outer_state(self, state: Any) -> None:
        pass

    def moments(self) -> None:
        return None

    def load_moments(self, moments: Any) -> None:
        pass

    def evaluate(self) -> float:
        return 0.0


async def swarm_child(index: int, n: int, mb: float, ports: list[int], strategy: str) -> None:
    import random

    import trio

    from swarm_tune.runtime.net import open_net_node
    from swarm_tune.runtime.net.config import NetConfig
    from swarm_tune.runtime.net.driver import DriverConfig, NodeDriver
    from swarm_tune.runtime.protocol.config import ProtocolConfig
    from swarm_tune.runtime.protocol.node import ProtocolNode
    from swarm_tune.runtime.protocol.tensors import ModelSpec
    from swarm_tune.runtime.training.bridge import LearnerBridge
    from swarm_tune.runtime.wire.identity import Identity

    numel = numel_of(mb)
    learner = FixedLearner(index, n, numel)
    ids = [Identity.from_seed(key_seed(i)) for i in range(n)]
    me = ids[index]
    cfg = ProtocolConfig(
        strategy=strategy,  # type: ignore[arg-type]
        aggregation_rule="mean",
        min_peers=n,
        start_deadline=0.0,
        round_timeout=600.0,
        heartbeat_interval=2.0,
        eviction_timeout=600.0,
        param_sync_every=0,
        subnet_cap=1.0,
        direction_test="never",
        group_audit=1,
        # Start-up only (round 0 is not measured): every node starts from the same zeros,
        # yet each asks peers for state at start. With 3 asked, N = 8 moved 24 x the update
        # before round 0 and, at a load of 22, every sync timed out and the run with it.
        sync_fanout=1,
        sync_timeout=120.0,
    )
    peers = [f"/ip4/127.0.0.1/tcp/{ports[i]}/p2p/{ids[i].peer_id}" for i in range(n) if i != index]
    protocol = ProtocolNode(
        me.peer_id,
        cfg,
        ModelSpec.from_tensors(learner.params),
        1,
        random.Random(f"bench/{index}"),
        address="127.0.0.1",
    )
    bridge = LearnerBridge(learner, cfg)  # type: ignore[arg-type]
    dcfg = DriverConfig(run_id="bench-group", max_rounds=ROUNDS, bootstrap=tuple(peers),
                        join_timeout=60.0, send_timeout=600.0)  # fmt: skip
    listen = [f"/ip4/127.0.0.1/tcp/{ports[index]}"]
    net_cfg = NetConfig(enable_mdns=False, enable_dht=False, enable_relay=False)
    async with open_net_node(me.seed, listen, peers, net_cfg) as net:
        driver = NodeDriver(protocol, net, bridge, me, dcfg)
        await driver.run(trio.Event())
    learner.check()
    print("RESULT " + json.dumps(learner.results), flush=True)


# -- hivemind child (runs in the throwaway venv: no swarm_tune import) -------------------

HIVEMIND_CHILD = textwrap.dedent(
    """
    import json, sys, time, hashlib
    import torch, hivemind
    index, n, numel, addr_file = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    def update_of(i):
        return torch.randn(numel, generator=torch.Generator().manual_seed(1000 + i))
    if index == 0:
        dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
        with open(addr_file + ".tmp", "w") as f:
            f.write(str(dht.get_visible_maddrs()[0]))
        import os; os.replace(addr_file + ".tmp", addr_file)
    else:
        import os
        while not os.path.exists(addr_file):
            time.sleep(0.1)
        dht = hivemind.DHT(start=True, initial_peers=[open(addr_file).read()],
                           host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    mine = update_of(index)
    tensor = mine.clone()
    kept = [touched(numel) for _ in range(ROUNDS - WARM)]  # as for ours, see touched()
    avg = hivemind.averaging.DecentralizedAverager(
        [tensor], dht, prefix="bench", target_group_size=n, min_group_size=n,
        min_matchmaking_time=2.0, request_timeout=60.0, start=True)
    def cpu():  # this process and its p2pd daemon (psutil comes with hivemind)
        import psutil
        me = psutil.Process()
        return sum(sum(p.cpu_times()[:2]) for p in [me] + me.children(recursive=True))
    results = []
    for r in range(ROUNDS):
        with avg.get_tensors() as ts:
            ts[0].copy_(mine)
        t0, c0 = time.perf_counter(), cpu()
        out = avg.step(timeout=600)
        seconds, used = time.perf_counter() - t0, cpu() - c0
        if r >= WARM:
            with avg.get_tensors() as ts:
                kept[r - WARM].copy_(ts[0])
        results.append({"round": r, "seconds": seconds, "cpu": used,
                        "group": 0 if out is None else len(out)})
    mean = torch.zeros(numel, dtype=torch.float64)  # checked after the run, as for ours
    for i in range(n):
        mean += update_of(i).double()
    mean /= n
    for row, got in zip([row for row in results if row["round"] >= WARM], kept):
        row["err"] = max_abs_err(got, mean)
        row["digest"] = hashlib.blake2b(got.numpy().tobytes(), digest_size=8).hexdigest()
    print("RESULT " + json.dumps(results), flush=True)
    avg.shutdown(); dht.shutdown()
    """
)
# One definition of the error and of pre-touched memory, shared with the child
# (annotations stay unevaluated there).
HIVEMIND_CHILD = (
    "from __future__ import annotations\n"
    + inspect.getsource(max_abs_err)
    + inspect.getsource(touched)
    + HIVEMIND_CHILD.replace("ROUNDS", str(ROUNDS)).replace("WARM", str(WARM))
)


# -- parent -----------------------------------------------------------------------------


def run_children(
    cmds: list[list[str]], timeout: float, env: dict[str, str], logs: Path | None = None
) -> list[Any]:
    """Run the children together; each one not done by ``timeout`` is killed and reported
    (with which child it was), and with ``logs`` every child's output is kept there.

    Each child writes to its own file, never to a pipe: pipes were drained one child at a
    time (``communicate`` on child 0, then 1, ...), so once a later child had written 64 KiB
    (N = 8: a node logs a line per transfer and per failed heartbeat) its next log line
    blocked its event loop until every earlier child had exited. A watcher thread caught
    loop threads stuck in structlog's write for 1-3 s and more; peers' sends to them timed
    out, which logged more lines (note of issue 13, part A)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = [open(Path(tmp) / f"{i}.out", "w+") for i in range(len(cmds))]  # noqa: SIM115
        try:
            procs = [
                subprocess.Popen(c, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)
                for c, f in zip(cmds, files, strict=True)
            ]
            return _collect(cmds, procs, files, timeout, logs)
        finally:
            for f in files:
                f.close()


def _collect(
    cmds: list[list[str]],
    procs: list[subprocess.Popen[str]],
    files: list[Any],
    timeout: float,
    logs: Path | None,
) -> list[Any]:
    outs: list[Any] = []
    deadline = time.monotonic() + timeout
    for i, (p, f) in enumerate(zip(procs, files, strict=True)):
        late = ""
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            late = f"child {i} gave no result within {timeout:g} s (killed); "
        f.seek(0)
        out = f.read()
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"{Path(cmds[i][1]).stem}-{len(cmds)}-{i}.log").write_text(out)
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            outs.append({"error": late + out[-600:]})
        else:
            outs.append(json.loads(lines[-1][len("RESULT ") :]))
    return outs


def summarize(name: str, n: int, mb: float, per_peer: list[Any]) -> dict[str, Any]:
    if any(isinstance(r, dict) for r in per_peer):
        errors = [r["error"] for r in per_peer if isinstance(r, dict)]
        return {"name": name, "n": n, "error": errors[0]}
    measured = [[x for x in rows if x["round"] >= WARM] for rows in per_peer]
    seconds = [statistics.median(x["seconds"] for x in rows) for rows in measured if rows]
    goodput = [mb / s for s in seconds]
    rounds = {x["round"] for rows in measured for x in rows}
    # Every measured round: one digest among all peers.
    same = all(
        len({x["digest"] for rows in measured for x in rows if x["round"] == r}) == 1
        for r in rounds
    )
    cpu = [x["cpu"] for rows in measured for x in rows if "cpu" in x]
    return {
        "name": name,
        "n": n,
        "goodput": statistics.median(goodput) if goodput else float("nan"),
        "err": max((x["err"] for rows in measured for x in rows), default=float("nan")),
        "same_bits": bool(rounds) and same,
        "cpu": statistics.median(cpu) if cpu else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,4,8")
    ap.add_argument("--mb", type=float, default=124.0)
    ap.add_argument("--hivemind-python", default="", help="python of a venv with hivemind")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--flat", action="store_true", help="also run flat rounds (the old path)")
    ap.add_argument("--logs", default="", help="keep every child's output in this folder")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ports", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child in ("group", "flat"):
        import trio

        ports = [int(p) for p in args.ports.split(",")]
        trio.run(swarm_child, args.index, args.n, args.mb, ports, args.child)
        return
    try:
        sizes = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(not 2 <= n <= 64 for n in sizes) or not 0 < args.mb <= 4096:
        print("error: --sizes must be whole numbers in [2, 64], --mb in (0, 4096]", file=sys.stderr)
        sys.exit(2)
    hm = args.hivemind_python
    if hm and not Path(hm).exists():
        print(f"error: --hivemind-python {hm} does not exist", file=sys.stderr)
        sys.exit(2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    logs = Path(args.logs) if args.logs else None
    rows = []
    for n in sizes:
        for strategy in ("group", "flat") if args.flat else ("group",):
            port_list = ",".join(str(free_port()) for _ in range(n))
            cmds = [
                [sys.executable, __file__, "--child", strategy, "--index", str(i), "--n", str(n),
                 "--ports", port_list, "--mb", str(args.mb)]
                for i in range(n)
            ]  # fmt: skip
            outs = run_children(cmds, args.timeout, env, logs)
            rows.append(summarize(f"swarm-tune {strategy}", n, args.mb, outs))
            print(json.dumps(rows[-1]), flush=True)
        if hm:
            with tempfile.TemporaryDirectory() as tmp:
                script = Path(tmp) / "child.py"
                script.write_text(HIVEMIND_CHILD)
                addr = str(Path(tmp) / "addr")
                numel = str(numel_of(args.mb))
                cmds = [[hm, str(script), str(i), str(n), numel, addr] for i in range(n)]
                outs = run_children(cmds, args.timeout, env, logs)
                rows.append(summarize("hivemind 1.1.12", n, args.mb, outs))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\naveraging a {args.mb:g} MB fp32 update on loopback (goal: swarm-tune >= 2x hivemind)")
    print(
        f"{'system':18} {'N':>3} {'MB/s/peer':>10} {'max abs err':>12} {'same bits':>9} "
        f"{'CPU s/peer-round':>16}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['name']:18} {r['n']:>3} failed: {r['error'][-200:]!r}")
            continue
        print(
            f"{r['name']:18} {r['n']:>3} {r['goodput']:>10.2f} {r['err']:>12.3e} "
            f"{r['same_bits']!s:>9} {r['cpu']:>16.2f}"
        )
    for n in sizes:
        ours = [
            r for r in rows if r["n"] == n and r["name"] == "swarm-tune group" and "goodput" in r
        ]
        theirs = [
            r for r in rows if r["n"] == n and r["name"].startswith("hive") and "goodput" in r
        ]
        if ours and theirs:
            ratio = ours[0]["goodput"] / theirs[0]["goodput"]
            print(f"N={n}: ratio swarm-tune / hivemind = {ratio:.2f}x")


if __name__ == "__main__":
    main()
