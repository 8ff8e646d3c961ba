"""Named node groups and a scripted timeline: the precise questions a researcher asks.

Why groups and a timeline on top of random churn: random draws answer "how does the swarm
behave on average", not "what happens when THESE 20 nodes leave after round 10 and come back
5 rounds later". A group pins given nodes to a bandwidth, a compute class, a region, a /24
and/or an adversary behaviour; the timeline makes named nodes, groups or a seeded fraction
leave, crash, join (and stay), opens and heals partitions and changes links, at a virtual
time (``at``, seconds) or when the swarm reaches a round (``round``: the same milestone as
swarm.parquet's rows, checked at every monitor tick).

Groups are disjoint. Members are the explicit ``nodes`` (ids like ``n0003`` or indices), or
``count`` / ``fraction`` nodes drawn with a seeded generator of their own
(``{seed}:group:{name}``) among the nodes no earlier group took. Nodes a timeline moves are
exempt from random churn (the script, not a dice roll, decides where they are).

Bad scripts are rejected before anything runs, each with its YAML line: unknown groups,
nodes, regions or compute classes, groups larger than the swarm, and contradictions found by
playing the script on paper (a node leaving twice, joining while online, two actions on one
node at one instant, a partition opened while one is open, a heal with none open). Events
on the same nodes must all use ``at`` or all use ``round``: the two clocks cannot be ordered
before the run.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from swarm_tune.runtime.adversary.attacks import Behaviour

Action = Literal["leave", "crash", "join", "partition", "heal", "link"]
NODE_ACTIONS = frozenset({"leave", "crash", "join", "link"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinnedLink(_Strict):
    uplink_mbps: float = Field(gt=0)
    downlink_mbps: float = Field(gt=0)


class GroupAdversary(_Strict):
    """The behaviour every member runs (same meaning as an ``adversaries:`` entry)."""

    behaviour: Behaviour
    strength: float | None = Field(default=None, description="the behaviour's knob")
    sybil: bool = Field(default=False, description="identical updates from one /24")
    start_round: int = Field(default=0, ge=0)


class GroupSpec(_Strict):
    name: str = Field(min_length=1)
    nodes: list[int | str] | None = None
    count: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=1)
    bandwidth: PinnedLink | None = None
    compute: str | None = Field(default=None, description="a compute class name")
    region: str | None = Field(default=None, description="a topology region name")
    subnet: str | None = Field(default=None, description="every member inside this /24")
    adversary: GroupAdversary | None = None
    start: Literal["online", "offline"] = "online"

    @model_validator(mode="after")
    def _sized(self) -> GroupSpec:
        given = sum(x is not None for x in (self.nodes, self.count, self.fraction))
        if given != 1:
            raise ValueError("give exactly one of nodes, count or fraction")
        if self.subnet is not None:
            try:
                ipaddress.IPv4Address(self.subnet)
            except ValueError:
                raise ValueError(f"subnet {self.subnet!r} is not an IPv4 address") from None
        return self


class TimelineEvent(_Strict):
    at: float | None = Field(default=None, ge=0, description="virtual seconds")
    round: int | None = Field(default=None, ge=0, description="when the swarm reaches it")
    do: Action
    group: str | None = None
    nodes: list[int | str] | None = None
    fraction: float | None = Field(default=None, gt=0, le=1)
    sides: list[list[str]] = Field(default_factory=list, description="partition: group/regions")
    uplink_mbps: float | None = Field(default=None, gt=0)
    downlink_mbps: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _coherent(self) -> TimelineEvent:
        if (self.at is None) == (self.round is None):
            raise ValueError("give exactly one of at (seconds) or round")
        targets = sum(x is not None for x in (self.group, self.nodes, self.fraction))
        if self.do in NODE_ACTIONS and targets != 1:
            raise ValueError(f"{self.do}: give exactly one of group, nodes or fraction")
        if self.do not in NODE_ACTIONS and targets:
            raise ValueError(f"{self.do} takes no group, nodes or fraction")
        if self.do == "partition" and len(self.sides) < 1:
            raise ValueError("partition: give sides (lists of group or region names)")
        if self.do != "partition" and self.sides:
            raise ValueError(f"{self.do} takes no sides")
        rates = (self.uplink_mbps, self.downlink_mbps)
        if self.do == "link" and None in rates:
            raise ValueError("link: give uplink_mbps and downlink_mbps")
        if self.do != "link" and rates != (None, None):
            raise ValueError(f"{self.do} takes no uplink_mbps/downlink_mbps")
        return self

    @property
    def when(self) -> tuple[str, float]:
        return ("round", float(self.round)) if self.round is not None else ("at", self.at or 0.0)


@dataclass(frozen=True, slots=True)
class Issue:
    path: str
    message: str


def node_width(total: int) -> int:
    return max(4, len(str(total - 1)))


def parse_node(ref: int | str, total: int) -> int | None:
    """``3`` or ``"n0003"`` -> 3; None when it names no node of this swarm."""
    if isinstance(ref, int):
        idx = ref
    elif ref.startswith("n") and ref[1:].isdigit():
        idx = int(ref[1:])
    else:
        return None
    return idx if 0 <= idx < total else None


def resolve_groups(
    groups: Sequence[GroupSpec], initial: int, total: int, seed: int
) -> tuple[dict[str, list[int]], list[Issue]]:
    """Members of each group (node indices), and what is wrong with the groups."""
    issues: list[Issue] = []
    taken: set[int] = set()
    out: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        if g.name in out:
            issues.append(Issue(f"groups.{i}.name", f"group {g.name!r} is defined twice"))
            continue
        if g.nodes is not None:
            members = []
            for j, ref in enumerate(g.nodes):
                idx = parse_node(ref, total)
                if idx is None:
                    issues.append(Issue(f"groups.{i}.nodes.{j}", f"unknown node {ref!r}"))
                elif idx in taken or idx in members:
                    issues.append(Issue(f"groups.{i}.nodes.{j}", f"node {ref!r} is in two groups"))
                else:
                    members.append(idx)
        else:
            k = g.count if g.count is not None else round((g.fraction or 0.0) * initial)
            free = [n for n in range(initial) if n not in taken]
            if k > len(free):
                what = "the swarm has" if not taken else "other groups leave"
                issues.append(
                    Issue(f"groups.{i}", f"group {g.name!r} has {k} nodes but {what} {len(free)}")
                )
                k = len(free)
            members = sorted(random.Random(f"{seed}:group:{g.name}").sample(free, k))
        taken.update(members)
        out[g.name] = sorted(members)
    return out, issues


def event_targets(
    ev: TimelineEvent,
    k: int,
    groups: dict[str, list[int]],
    pool: Sequence[int],
    total: int,
    seed: int,
) -> list[int]:
    """The nodes a node action names (a fraction is a seeded pick of ``pool``)."""
    if ev.group is not None:
        return list(groups.get(ev.group, []))
    if ev.nodes is not None:
        return sorted({i for ref in ev.nodes if (i := parse_node(ref, total)) is not None})
    k_nodes = round((ev.fraction or 0.0) * len(pool))
    return sorted(random.Random(f"{seed}:timeline:{k}").sample(list(pool), k_nodes))


def check_timeline(
    events: Sequence[TimelineEvent],
    groups: dict[str, list[int]],
    offline_at_start: set[int],
    regions: Sequence[str],
    pool: Sequence[int],
    total: int,
    seed: int,
) -> list[Issue]:
    """Unknown names, and contradictions found by playing the script in order."""
    issues: list[Issue] = []
    clock_of: dict[int, str] = {}
    plays: list[tuple[tuple[str, float], int, list[int]]] = []
    for k, ev in enumerate(events):
        if ev.group is not None and ev.group not in groups:
            issues.append(Issue(f"timeline.{k}.group", f"unknown group {ev.group!r}"))
            continue
        if ev.nodes is not None:
            bad = [r for r in ev.nodes if parse_node(r, total) is None]
            if bad:
                issues.append(Issue(f"timeline.{k}.nodes", f"unknown node {bad[0]!r}"))
                continue
        seen: set[str] = set()
        for j, side in enumerate(ev.sides):
            for name in side:
                if name not in groups and name not in regions:
                    issues.append(
                        Issue(f"timeline.{k}.sides.{j}", f"unknown group or region {name!r}")
                    )
                elif name in seen:
                    issues.append(Issue(f"timeline.{k}.sides.{j}", f"{name!r} is on two sides"))
                seen.add(name)
        targets = event_targets(ev, k, groups, pool, total, seed) if ev.do in NODE_ACTIONS else []
        clock = ev.when[0]
        for n in targets:
            if clock_of.setdefault(n, clock) != clock:
                issues.append(
                    Issue(
                        f"timeline.{k}",
                        f"node n{n:0{node_width(total)}d} has events in both at and round: "
                        "they cannot be ordered before the run",
                    )
                )
                break
        plays.append((ev.when, k, targets))
    cut_clocks = {ev.when[0] for ev in events if ev.do in ("partition", "heal")}
    if len(cut_clocks) > 1:
        k = next(i for i, ev in enumerate(events) if ev.do in ("partition", "heal"))
        issues.append(Issue(f"timeline.{k}", "partitions and heals must all use at or all round"))
    if issues:
        return issues
    online = {n: n not in offline_at_start for n in range(total)}
    touched: dict[tuple[tuple[str, float], int], int] = {}  # (when, node) -> event index
    open_partition: int | None = None
    for when, k, targets in sorted(plays, key=lambda p: (p[0], p[1])):
        ev = events[k]
        for n in targets:
            prev = touched.setdefault((when, n), k)
            if prev != k:
                issues.append(
                    Issue(
                        f"timeline.{k}",
                        f"contradicts timeline.{prev}: both act on n{n:0{node_width(total)}d} "
                        f"at {when[0]} {when[1]:g}",
                    )
                )
                break
            if ev.do in ("leave", "crash") and not online[n]:
                issues.append(
                    Issue(f"timeline.{k}", f"{ev.do}: n{n:0{node_width(total)}d} is not online")
                )
                break
            if ev.do == "join" and online[n]:
                issues.append(
                    Issue(f"timeline.{k}", f"join: n{n:0{node_width(total)}d} is already online")
                )
                break
            if ev.do in ("leave", "crash", "join"):
                online[n] = ev.do == "join"
        if ev.do == "partition":
            if open_partition is not None:
                issues.append(
                    Issue(f"timeline.{k}", f"a partition (timeline.{open_partition}) is open")
                )
            open_partition = k
        elif ev.do == "heal":
            if open_partition is None:
                issues.append(Issue(f"timeline.{k}", "heal: no partition is open"))
            open_partition = None
    return issues
