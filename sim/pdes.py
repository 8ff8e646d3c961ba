"""A partitioned run: K partition worlds in lock-step windows, in this process or on Ray.

Why: one SimPy world is one Python process; a world too big for one machine has to be cut.
The cut is conservative parallel discrete-event simulation with a fixed lookahead: every
partition (``sim.pdes_world``: its model and what it gives up against the single world)
advances to the next boundary, the windows' messages are routed to their receivers'
partitions, and the next window starts. A boundary is every W (the smallest link latency:
nothing sent inside a window can arrive inside it) and every monitor tick (where the swarm
round, the evaluation and the stop are decided, on every partition's state at that instant).

Why Ray actors and not a cluster of our own: placement, transport, failure reporting and
``ray start --address`` for more machines already exist there (the sweeps use it the same
way, sim/sweep_run.py). The coordinator is this process; each partition is one actor; the
only traffic is one call per partition per window (the window's posted messages, pickled with
each tensor compacted to its own bytes, and the online set of the boundary). ``LocalParts``
runs the same partitions in this process, one after the other: the same tables, no speed-up.
"""

from __future__ import annotations

import io
import math
import pickle
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import torch

from swarm_tune.sim import ray_ship
from swarm_tune.sim.driver import ProgressFn, RunResult, eval_sample, quantile_round
from swarm_tune.sim.pdes_world import CONNECT, PartWorld, Posted, Snapshot, quiet
from swarm_tune.sim.recorder import Recorder
from swarm_tune.sim.scenario import Scenario

GC_EVERY_ROUNDS = 10
_SORT_KEYS = {
    "rounds": ["t_close", "node_index"],
    "rejections": ["t", "node"],
    "events": ["t", "node"],
}
Advance = tuple[float, list[Posted], list[int], int | None, bool]


class Parts(Protocol):
    """K partition worlds, wherever they run."""

    parts: int

    def describe(self) -> dict[str, Any]: ...
    def advance(self, calls: list[Advance]) -> list[tuple[list[Posted], Snapshot]]: ...
    def sample(
        self, nodes: list[list[int]]
    ) -> list[tuple[dict[int, torch.Tensor], dict[int, float]]]: ...
    def model_eval(
        self, nodes: list[int], rows: dict[int, torch.Tensor]
    ) -> tuple[float, float, float]: ...
    def tables(self) -> list[dict[str, pa.Table]]: ...
    def close(self) -> None: ...


class LocalParts:
    """Every partition in this process (tests, and K = 1)."""

    def __init__(self, scenario: Scenario, parts: int) -> None:
        self.parts = parts
        self.worlds = [PartWorld(scenario, k, parts) for k in range(parts)]

    def describe(self) -> dict[str, Any]:
        return self.worlds[0].describe()

    def advance(self, calls: list[Advance]) -> list[tuple[list[Posted], Snapshot]]:
        return [w.advance(*c) for w, c in zip(self.worlds, calls, strict=True)]

    def sample(
        self, nodes: list[list[int]]
    ) -> list[tuple[dict[int, torch.Tensor], dict[int, float]]]:
        return [w.sample(n) for w, n in zip(self.worlds, nodes, strict=True)]

    def model_eval(
        self, nodes: list[int], rows: dict[int, torch.Tensor]
    ) -> tuple[float, float, float]:
        return self.worlds[0].model_eval(nodes, rows)

    def tables(self) -> list[dict[str, pa.Table]]:
        return [w.tables() for w in self.worlds]

    def close(self) -> None:
        self.worlds = []


def _compact(t: torch.Tensor) -> Any:
    """A tensor pickled as its own bytes: a row of a batched chunk is a view whose storage is
    the whole chunk, which plain pickling would send with every message."""
    if t.untyped_storage().nbytes() <= t.nbytes and t.storage_offset() == 0:
        return NotImplemented
    own: Any = t.clone()
    return own.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        return _compact(obj) if isinstance(obj, torch.Tensor) else NotImplemented


def pack(posted: list[Posted]) -> bytes:
    """A window's posts for one partition (our own processes: never peer data)."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(posted)
    return buf.getvalue()


def _route(posted: list[Posted], owner: Sequence[int], parts: int) -> list[list[Posted]]:
    out: list[list[Posted]] = [[] for _ in range(parts)]
    for p in posted:
        value = p[3]
        out[owner[value[1] if value[0] == CONNECT else value[0]]].append(p)
    return out


class PartActor:
    """One partition in a Ray actor; posts leave it already split by receiving partition."""

    def __init__(self, scenario: Scenario, part: int, parts: int) -> None:
        # The actor's process is the world's: SimDriver.run's settings for its whole life.
        self._quiet = quiet()
        self._quiet.__enter__()
        self.world = PartWorld(scenario, part, parts)
        self.parts = parts

    def describe(self) -> dict[str, Any]:
        return self.world.describe()

    def advance(
        self, until: float, inbox: list[bytes], online: list[int], rnd: int | None, gc_: bool
    ) -> tuple[list[bytes], Snapshot]:
        posted = [p for blob in inbox for p in pickle.loads(blob)]
        out, snap = self.world.advance(until, posted, online, rnd, gc_)
        return [pack(b) for b in _route(out, self.world.owner, self.parts)], snap

    def sample(self, nodes: list[int]) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
        return self.world.sample(nodes)

    def model_eval(
        self, nodes: list[int], rows: dict[int, torch.Tensor]
    ) -> tuple[float, float, float]:
        return self.world.model_eval(nodes, rows)

    def tables(self) -> dict[str, pa.Table]:
        return self.world.tables()


class RayParts:
    """Every partition in its own Ray actor: a local Ray (``address`` None, one CPU per
    partition) or a cluster's (``ray start --head`` there, then ``address="host:6379"``)."""

    def __init__(self, scenario: Scenario, parts: int, address: str | None = None) -> None:
        import ray

        if ray.is_initialized():
            raise RuntimeError("Ray is already initialised here: the run must ship its code")
        self._ray = ray
        self.parts = parts
        self._stage = tempfile.TemporaryDirectory(prefix="swarm-ship-")
        shipped = ray_ship.stage(Path(self._stage.name))
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": ray_ship.runtime_env(shipped),
        }
        ray.init(**kwargs, **ray_ship.init_target(address, parts))
        actor = ray.remote(num_cpus=1)(PartActor)
        self.actors: list[Any] = [actor.remote(scenario, k, parts) for k in range(parts)]
        # Blobs posted to each partition in the last window, per sender partition.
        self._held: list[list[bytes]] = [[] for _ in range(parts)]

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = self._ray.get(self.actors[0].describe.remote())
        return described

    def advance(self, calls: list[Advance]) -> list[tuple[list[Posted], Snapshot]]:
        # Inboxes travel as the senders' blobs (``calls``' own inboxes are empty here).
        refs = [
            a.advance.remote(c[0], self._held[k], c[2], c[3], c[4])
            for k, (a, c) in enumerate(zip(self.actors, calls, strict=True))
        ]
        results = self._ray.get(refs)
        self._held = [[r[0][k] for r in results] for k in range(self.parts)]
        return [([], r[1]) for r in results]

    def sample(
        self, nodes: list[list[int]]
    ) -> list[tuple[dict[int, torch.Tensor], dict[int, float]]]:
        got: list[tuple[dict[int, torch.Tensor], dict[int, float]]] = self._ray.get(
            [a.sample.remote(n) for a, n in zip(self.actors, nodes, strict=True)]
        )
        return got

    def model_eval(
        self, nodes: list[int], rows: dict[int, torch.Tensor]
    ) -> tuple[float, float, float]:
        got: tuple[float, float, float] = self._ray.get(
            self.actors[0].model_eval.remote(nodes, rows)
        )
        return got

    def tables(self) -> list[dict[str, pa.Table]]:
        got: list[dict[str, pa.Table]] = self._ray.get([a.tables.remote() for a in self.actors])
        return got

    def close(self) -> None:
        self._ray.shutdown()
        self._stage.cleanup()


class MergedRecorder(Recorder):
    """The coordinator's swarm table and the partitions' tables, merged in a fixed order."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.merged: dict[str, pa.Table] = {}

    def merge(self, per_part: Sequence[dict[str, pa.Table]]) -> None:
        for name, keys in _SORT_KEYS.items():
            tables = []
            for k, t in enumerate(per_part):
                # A row's position in its partition: ties on the keys are one node's rows,
                # so this is that node's own order, whatever the partition count.
                pos = pa.array(range(t[name].num_rows), pa.int64())
                part = pa.array([k] * t[name].num_rows, pa.int64())
                tables.append(t[name].append_column("_pos", pos).append_column("_part", part))
            merged = pa.concat_tables(tables)
            order = [(c, "ascending") for c in [*keys, "_part", "_pos"]]
            self.merged[name] = merged.sort_by(order).drop_columns(["_pos", "_part"])

    def tables(self) -> dict[str, pa.Table]:
        own = super().tables()
        return {name: self.merged.get(name, table) for name, table in own.items()}


class Coordinator:
    """The windows, the monitor and the stop; the partitions do the rest."""

    def __init__(self, scenario: Scenario, parts: Parts, progress: ProgressFn | None) -> None:
        self.s = scenario
        self.p = parts
        self.info = parts.describe()
        self.window: float = self.info["window"]
        self.owner: list[int] = self.info["owners"]
        self.rec = MergedRecorder(self.info["run_id"])
        self.progress = progress
        self._eval_rng = random.Random(f"{scenario.seed}:eval")
        self._snaps: list[Snapshot] = []
        self._wasted: dict[int, float] = {}  # bits sent by cancelled transfers, per sender
        self._wall0 = time.perf_counter()

    def _swarm_round(self, fallback: int) -> int:
        rounds = sorted(r for s in self._snaps for _, r in s.rounds)
        if not rounds:
            return fallback
        return quantile_round(rounds, self.s.rounds.quantile)

    def _measure(self, r: int, swarm_round: int, t: float) -> None:
        snaps = self._snaps
        counters = {k: sum(s.counters[k] for s in snaps) for k in snaps[0].counters}
        # Per sender, summed exactly: a float sum per partition would round differently per K.
        counters["cancelled_bytes"] = int(math.fsum(self._wasted.values()) / 8)
        row: dict[str, Any] = {
            "round": r,
            "t": t,
            "wall_s": time.perf_counter() - self._wall0,
            "online": sum(len(s.rounds) for s in snaps),
            "median_round": swarm_round,
            **counters,
        }
        honest = sorted(i for s in snaps for i in s.honest)
        final = swarm_round >= self.s.rounds.target
        if honest and (r % self.s.outputs.eval_every == 0 or final):
            sample = eval_sample(self._eval_rng, honest, self.s.outputs.eval_sample)
            per_part: list[list[int]] = [[] for _ in range(self.p.parts)]
            for i in sample:
                per_part[self.owner[i]].append(i)
            rows: dict[int, torch.Tensor] = {}
            loss_of: dict[int, float] = {}
            for got_rows, got_losses in self.p.sample(per_part):
                rows.update(got_rows)
                loss_of.update(got_losses)
            losses = [loss_of[i] for i in sample]
            mean_loss, mean_acc, div = self.p.model_eval(sample, rows)
            row["eval_loss_mean_model"] = mean_loss
            row["eval_acc_mean_model"] = mean_acc
            row["eval_loss_median"] = sorted(losses)[len(losses) // 2]
            row["divergence"] = div
        self.rec.swarm_row(row)

    def run(self) -> RunResult:
        s, parts = self.s, self.p.parts
        target, deadline = s.rounds.target, s.rounds.max_virtual_time
        interval: float = self.info["interval"]
        inboxes: list[list[Posted]] = [[] for _ in range(parts)]
        online: list[int] = []
        # Boundary 0: the start's own posts and state (nothing has run yet).
        self._step(0.0, inboxes, online, None, False)
        online = self._online()
        b, milestone, next_tick, next_gc = 0.0, 0, 0.0, GC_EVERY_ROUNDS
        self._measure(0, 0, 0.0)
        stop = ""
        while True:
            on_round: int | None = None
            collect = False
            if b == next_tick:  # the monitor's tick (SimDriver._monitor)
                current = self._swarm_round(milestone)
                if current > milestone:
                    for r in range(milestone + 1, min(current, target) + 1):
                        self._measure(r, current, b)
                    milestone = current
                    if current >= next_gc:
                        collect, next_gc = True, current + GC_EVERY_ROUNDS
                    if self.progress is not None:
                        self.progress(min(current, target), target, b)
                on_round = current
                if current >= target:
                    stop = "target_round"
                    break
                next_tick = b + interval
            if b >= deadline:
                self._measure(max(milestone, 0), self._swarm_round(milestone), b)
                stop = "max_virtual_time"
                break
            nb = min(b + self.window, next_tick, deadline)
            inboxes = self._step(nb, inboxes, online, on_round, collect)
            online = self._online()
            b = nb
        self.rec.merge(self.p.tables())
        return RunResult(
            self.rec,
            b,
            time.perf_counter() - self._wall0,
            sum(x.events for x in self._snaps),
            stop,
            milestone,
            len(online),
            self.info["adversaries"],
        )

    def _step(
        self,
        until: float,
        inboxes: list[list[Posted]],
        online: list[int],
        on_round: int | None,
        collect: bool,
    ) -> list[list[Posted]]:
        calls = [(until, inboxes[k], online, on_round, collect) for k in range(self.p.parts)]
        results = self.p.advance(calls)
        self._snaps = [snap for _, snap in results]
        wasted = self._wasted
        for snap in self._snaps:  # each sender's windows in order: the same sums for any K
            for src, bits in snap.wasted_bits.items():
                wasted[src] = wasted.get(src, 0.0) + bits
        nxt: list[list[Posted]] = [[] for _ in range(self.p.parts)]
        for posted, _ in results:
            for k, bucket in enumerate(_route(posted, self.owner, self.p.parts)):
                nxt[k] += bucket
        return nxt

    def _online(self) -> list[int]:
        return sorted(i for s in self._snaps for i, _ in s.rounds)


def run_partitioned(
    scenario: Scenario,
    parts: int,
    *,
    ray: bool = False,
    address: str | None = None,
    progress: ProgressFn | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    """Run ``scenario`` cut into ``parts`` partitions; the result and the world's description
    (run id, groups, payloads, window) for the manifest."""
    if parts < 1:
        raise ValueError(f"partitions must be >= 1, got {parts}")
    with quiet():
        backend: Parts = RayParts(scenario, parts, address) if ray else LocalParts(scenario, parts)
        try:
            coord = Coordinator(scenario, backend, progress)
            return coord.run(), coord.info
        finally:
            backend.close()
