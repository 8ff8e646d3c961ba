"""Groups and the timeline inside a running world: pins at construction, events as they fall.

Why a module apart from the driver: the driver turns protocol effects into world actions;
this one turns a researcher's script into the same actions (``leave``, ``join``, a
partition, a link change), through a narrow interface, so neither grows into the other.
Round-timed events fire at the monitor tick that first sees the swarm at that round (the
same milestone as swarm.parquet's rows); time-timed ones at their virtual second.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

import simpy

from swarm_tune.sim.adversary import Adversary, assign_adversaries
from swarm_tune.sim.network import Network
from swarm_tune.sim.recorder import Recorder
from swarm_tune.sim.scenario import AdversarySpec, Scenario
from swarm_tune.sim.timeline import TimelineEvent, event_targets, resolve_groups


class World(Protocol):
    """What the script needs from the driver."""

    env: simpy.Environment
    network: Network
    rec: Recorder
    site_of: list[int]

    def leave(self, idx: int, crash: bool) -> None: ...
    def join(self, idx: int, kind: str) -> None: ...


class Groups:
    """Named groups resolved to node indices, and the pins they carry."""

    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.members, issues = resolve_groups(s.groups, s.nodes.count, s.total_nodes, s.seed)
        if issues:  # parse_scenario rejects these; a Scenario built by hand may not have been
            raise ValueError("; ".join(f"{i.path}: {i.message}" for i in issues))
        self.grouped = {m for ms in self.members.values() for m in ms}
        self.offline_at_start = {
            m for g in s.groups if g.start == "offline" for m in self.members[g.name]
        }

    def adversaries(self) -> dict[int, Adversary]:
        out: dict[int, Adversary] = {}
        for g in self.s.groups:
            a, members = g.adversary, self.members[g.name]
            if a is None or not members:
                continue
            spec = AdversarySpec(
                behaviour=a.behaviour,
                count=len(members),
                strength=a.strength,
                sybil=a.sybil,
                start_round=a.start_round,
                group_size=len(members) if a.sybil else None,
                subnet=g.subnet or "203.0.113.0",
            )
            out.update(assign_adversaries([spec], members, self.s.seed))
        return out

    def address(self, idx: int) -> str | None:
        for g in self.s.groups:
            if g.subnet is not None and idx in self.members[g.name]:
                a, b, c, _ = (int(x) for x in g.subnet.split("."))
                return f"{a}.{b}.{c}.{1 + self.members[g.name].index(idx) % 254}"
        return None

    def pin_sites(self, sites: list[int]) -> None:
        names = [r.name for r in self.s.topology.regions]
        for g in self.s.groups:
            if g.region is not None:
                for m in self.members[g.name]:
                    sites[m] = names.index(g.region)

    def pin_bandwidth(self, ups: list[float], downs: list[float]) -> None:
        for g in self.s.groups:
            if g.bandwidth is not None:
                for m in self.members[g.name]:
                    ups[m] = g.bandwidth.uplink_mbps * 1e6
                    downs[m] = g.bandwidth.downlink_mbps * 1e6

    def pinned_compute(self) -> dict[int, int]:
        names = [c.name for c in self.s.compute.classes]
        return {
            m: names.index(g.compute)
            for g in self.s.groups
            if g.compute is not None
            for m in self.members[g.name]
        }


class Timeline:
    """The scripted events of one run."""

    def __init__(self, s: Scenario, groups: Groups) -> None:
        self.s = s
        self.groups = groups
        pool = [i for i in range(s.nodes.count) if i not in groups.grouped]
        self.targets = [
            event_targets(ev, k, groups.members, pool, s.total_nodes, s.seed)
            for k, ev in enumerate(s.timeline)
        ]
        self.moved = {n for ts in self.targets for n in ts}  # exempt from random churn
        self._by_round = sorted(
            (ev.round, k) for k, ev in enumerate(s.timeline) if ev.round is not None
        )
        self._next = 0

    def start(self, world: World, absent: AbstractSet[int]) -> None:
        self.world = world
        self.absent = absent
        for k, ev in enumerate(self.s.timeline):
            if ev.at is not None:
                world.env.process(self._at(ev.at, k))

    def _at(self, at: float, k: int) -> Any:
        yield self.world.env.timeout(at)
        self.fire(k)

    def on_round(self, swarm_round: int) -> None:
        """Fire every round-timed event up to ``swarm_round`` (monitor ticks)."""
        while self._next < len(self._by_round) and self._by_round[self._next][0] <= swarm_round:
            self.fire(self._by_round[self._next][1])
            self._next += 1

    def fire(self, k: int) -> None:
        ev: TimelineEvent = self.s.timeline[k]
        w = self.world
        targets = [n for n in self.targets[k] if n not in self.absent]
        if ev.do in ("leave", "crash"):
            for n in targets:
                w.leave(n, ev.do == "crash")
        elif ev.do == "join":
            for n in targets:
                w.join(n, "join" if n in self.groups.offline_at_start else "rejoin")
        elif ev.do == "link":
            assert ev.uplink_mbps is not None and ev.downlink_mbps is not None
            for n in targets:
                w.network.set_bandwidth(n, ev.uplink_mbps * 1e6, ev.downlink_mbps * 1e6)
        elif ev.do == "partition":
            w.network.partition(self._sides(ev.sides))
        else:
            w.network.heal()
        kind = {"partition": "partition_open", "heal": "partition_heal"}.get(ev.do, "")
        w.rec.event(
            w.env.now, kind or f"script_{ev.do}", "", detail=f"timeline.{k}", value=len(targets)
        )

    def _sides(self, sides: Sequence[Sequence[str]]) -> list[int]:
        names = [r.name for r in self.s.topology.regions]
        total = self.s.total_nodes
        label = [len(sides)] * total
        for j, side in enumerate(sides):
            for name in side:
                if name in self.groups.members:
                    for m in self.groups.members[name]:
                        label[m] = j
                else:
                    site = names.index(name)
                    for i in range(total):
                        if self.world.site_of[i] == site:
                            label[i] = j
        return label
