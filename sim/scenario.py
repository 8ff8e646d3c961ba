"""The scenario file: one YAML document that describes a whole simulated world.

Why pydantic with ``extra="forbid"`` everywhere: a scenario is the unit of reproducibility (it
is written back, resolved, into every run folder), so a typo must be an error, never a knob
silently left at its default. Why our own error type with YAML line numbers: people edit these
files by hand, and "nodes.count: Input should be greater than 0 (line 4)" is fixable in
seconds, where a pydantic traceback is not. Every problem is collected (not just the first),
and the combinations that cannot possibly run (more adversaries than nodes, a quorum larger
than the swarm, ...) are rejected here, before a single virtual node is built.

The ``protocol:`` block is generated from ``ProtocolConfig`` (same names, defaults and
checks; see ops/protocol_fields.py) and mapped onto it by ``Scenario.protocol_config()``.
``sweep:`` is accepted and ignored by a single run: the sweep runner expands it into
several scenarios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from swarm_tune.runtime.adversary.attacks import Behaviour
from swarm_tune.runtime.ops.protocol_fields import (
    config_from,
    pydantic_fields,
    pydantic_validators,
)
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.sim.distributions import Constant, Distribution
from swarm_tune.sim.learning_settings import LearningSettings
from swarm_tune.sim.timeline import GroupSpec, TimelineEvent, check_timeline, resolve_groups


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodesSpec(_Strict):
    count: int = Field(ge=1, le=1_000_000, description="nodes online at t=0")
    # Honest nodes are spread one per /24 so that the subnet cap means something.
    address_base: str = "10.0.0.0"
    start_sync: bool = Field(
        default=False,
        description="nodes online at t=0 ask their peers for state before round 0, as a real "
        "node does whenever peers are live when it starts (false: a swarm starting together "
        "from one seed, no sync)",
    )


class Region(_Strict):
    name: str
    weight: float = Field(default=1.0, gt=0)


class GraphSpec(_Strict):
    """A networkx generator (by function name) or a GraphML file; vertices are sites."""

    generator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    file: str | None = None
    hop_latency_ms: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> GraphSpec:
        if (self.generator is None) == (self.file is None):
            raise ValueError("give exactly one of generator or file")
        return self


class TopologySpec(_Strict):
    kind: Literal["full", "regions", "graph"] = "full"
    latency_ms: float = Field(default=20.0, ge=0, description="one-way, for kind=full")
    regions: list[Region] = Field(default_factory=list)
    region_latency_ms: list[list[float]] = Field(default_factory=list)
    graph: GraphSpec | None = None

    @model_validator(mode="after")
    def _coherent(self) -> TopologySpec:
        if self.kind == "regions":
            n = len(self.regions)
            if n == 0:
                raise ValueError("kind=regions needs at least one region")
            m = self.region_latency_ms
            if len(m) != n or any(len(row) != n for row in m):
                raise ValueError(f"region_latency_ms must be a {n}x{n} matrix")
            if any(v < 0 for row in m for v in row):
                raise ValueError("region_latency_ms entries must be >= 0")
        if self.kind == "graph" and self.graph is None:
            raise ValueError("kind=graph needs a graph block")
        return self


class BandwidthClass(_Strict):
    weight: float = Field(default=1.0, gt=0)
    uplink_mbps: float = Field(gt=0)
    downlink_mbps: float = Field(gt=0)


class LinksSpec(_Strict):
    jitter_ms: Distribution = Field(default_factory=lambda: Constant(value=0.0))
    bandwidth: list[BandwidthClass] = Field(
        default_factory=lambda: [BandwidthClass(uplink_mbps=100.0, downlink_mbps=100.0)],
        min_length=1,
    )
    loss: float = Field(default=0.0, ge=0.0, lt=1.0)
    control_bytes: int = Field(default=300, ge=1)
    bulk_setup_rtts: float = Field(
        default=0.0,
        ge=0.0,
        description="round trips a bulk transfer waits before its first byte (the real bulk "
        "plane's stream negotiation, offer/reply, data connection); sim/network.py",
    )
    bulk_lead_first: bool = Field(
        default=False,
        description="a burst's copies are not sent together: one (a seeded draw) goes first, "
        "alone; the others' set-up waits behind its data in the sender's queue, then they "
        "share the uplink (measured on the real bulk plane); sim/network.py",
    )


class PartitionSpec(_Strict):
    """From ``at`` to ``heal`` messages between groups are dropped.

    Groups are either region names (``groups: [[eu], [us, asia]]``) or, with ``fraction``, a
    seeded random share of the nodes cut off from the rest.
    """

    at: float = Field(ge=0)
    heal: float = Field(gt=0)
    groups: list[list[str]] = Field(default_factory=list)
    fraction: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _coherent(self) -> PartitionSpec:
        if self.heal <= self.at:
            raise ValueError("heal must be after at")
        if (self.fraction is None) == (not self.groups):
            raise ValueError("give exactly one of groups or fraction")
        return self


class ComputeClass(_Strict):
    name: str = "gpu"
    weight: float = Field(default=1.0, gt=0)
    step_time: Distribution = Field(default_factory=lambda: Constant(value=1.0))
    # 0 by default: the figure is the machine's (the real node logs it as message.encoded /
    # message.handled; bench_calibrate feeds it), and a default of 0 keeps every existing
    # scenario's rounds exactly as they were.
    message_s_per_mb: float = Field(
        default=0.0,
        ge=0.0,
        description="seconds of the node's CPU per MB of a bulk message: to encode it (once "
        "per message) and to decode and validate each copy received, one at a time",
    )
    # 0 by default for the same reason. The real node's event loop (Noise, yamux, framing)
    # spends CPU on every byte it sends or receives; on a node with a fraction of a core
    # (calibration's twin: N nodes share one machine) that CPU, not the link, can be what a
    # transfer waits for. sim/links.py: a processor-sharing server per node.
    transport_s_per_mb: float = Field(
        default=0.0,
        ge=0.0,
        description="CPU seconds per MB of bulk bytes the node sends or receives (its "
        "transport, every copy); 0 = free",
    )
    cores: float = Field(
        default=1.0,
        gt=0.0,
        description="cores the node's transport CPU gets (transport_s_per_mb); below 1 when "
        "nodes share a machine",
    )
    # False by default (every existing scenario unchanged): nodes on machines of their own.
    shared_cores: bool = Field(
        default=False,
        description="the class's nodes share one machine: its cores (cores x its nodes) go to "
        "the nodes whose transport is busy, at most 1 each, none wasted (sim/links.py); "
        "needs transport_s_per_mb",
    )

    @model_validator(mode="after")
    def _shared_needs_transport(self) -> ComputeClass:
        if self.shared_cores and not self.transport_s_per_mb:
            raise ValueError("shared_cores needs transport_s_per_mb (the CPU it shares)")
        if self.shared_cores and self.cores > 1:
            # A member gets at most one core (one event-loop thread): the rest would idle.
            raise ValueError("shared_cores needs cores <= 1 per node (each node uses at most 1)")
        return self


class StragglerSpec(_Strict):
    fraction: float = Field(default=0.0, ge=0, le=1)
    factor: float = Field(default=5.0, ge=1)


class ComputeSpec(_Strict):
    classes: list[ComputeClass] = Field(default_factory=lambda: [ComputeClass()], min_length=1)
    stragglers: StragglerSpec = Field(default_factory=StragglerSpec)


class JoinersSpec(_Strict):
    count: int = Field(default=0, ge=0)
    at: Distribution = Field(default_factory=lambda: Constant(value=0.0))


class ChurnSpec(_Strict):
    fraction: float = Field(default=0.0, ge=0, le=1, description="share of nodes that churn")
    session: Distribution = Field(default_factory=lambda: Constant(value=600.0))
    offline: Distribution = Field(default_factory=lambda: Constant(value=120.0))
    crash_probability: float = Field(default=0.5, ge=0, le=1)
    first_leave_after: float = Field(default=0.0, ge=0)
    first_session: Distribution | None = Field(
        default=None,
        description="length of the first session (default: a random tail of ``session``)",
    )
    joiners: JoinersSpec = Field(default_factory=JoinersSpec)


SMALL_JITTER = 1e-3  # x RMS: invisible to aggregation, yet no two colluders bit-identical
MAX_JITTER = 10.0  # x RMS: far beyond any norm bound already


class AdversarySpec(_Strict):
    """Attackers (runtime/adversary/attacks.py has the vocabulary and each strength)."""

    behaviour: Behaviour
    count: int | None = Field(default=None, ge=0)
    fraction: float | None = Field(default=None, ge=0, le=1)
    strength: float | None = Field(
        default=None, description="the behaviour's one knob (attacks.py); None = its default"
    )
    sybil: bool = Field(default=False, description="share one /24 and send identical updates")
    jitter: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_JITTER,
        description="each member adds Gaussian noise of this many times the update's RMS, so "
        "colluders are not bit-identical (0: identical; true: 1e-3, below any honest spread)",
    )
    group_size: int | None = Field(default=None, ge=1, description="sybil: nodes per /24")
    subnet: str = "203.0.113.0"
    start_round: int = Field(default=0, ge=0)
    absent: bool = Field(
        default=False,
        description="counterfactual: the same nodes are picked but never start (clean run)",
    )

    @field_validator("jitter", mode="before")
    @classmethod
    def _jitter_flag(cls, value: Any) -> Any:
        """``jitter: true`` keeps its old meaning: a tiny perturbation."""
        if isinstance(value, bool):
            return SMALL_JITTER if value else 0.0
        return value

    @model_validator(mode="after")
    def _sized(self) -> AdversarySpec:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of count or fraction")
        return self

    def resolved_count(self, nodes: int) -> int:
        return self.count if self.count is not None else round((self.fraction or 0.0) * nodes)


class _ProtocolBase(_Strict):
    """The ``protocol:`` block: every ``ProtocolConfig`` parameter under its own name, with
    its default and checks, generated from the core (ops/protocol_fields.py)."""

    def to_config(self) -> ProtocolConfig:
        return config_from(self, aliased=False)


if TYPE_CHECKING:
    ProtocolSpec = _ProtocolBase
else:
    ProtocolSpec = create_model(
        "ProtocolSpec",
        __base__=_ProtocolBase,
        __module__=__name__,
        __validators__=pydantic_validators(aliased=False),
        **pydantic_fields(aliased=False),
    )


class RoundsSpec(_Strict):
    target: int = Field(default=20, ge=1, description="stop when the swarm reached this round")
    quantile: float = Field(default=0.5, gt=0, le=1, description="which node's round counts")
    max_virtual_time: float = Field(default=math.inf, gt=0)
    bootstrap_peers: int = Field(default=8, ge=1, description="gossip: peers dialled at join")


class OutputsSpec(_Strict):
    dir: str | None = None  # default runs_out/<name>-s<seed>
    eval_every: int = Field(default=1, ge=1, description="swarm rounds between evaluations")
    eval_sample: int = Field(default=256, ge=1, description="nodes evaluated per evaluation")
    monitor_interval: float | None = Field(default=None, gt=0)


class Scenario(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    nodes: NodesSpec
    topology: TopologySpec = Field(default_factory=TopologySpec)
    links: LinksSpec = Field(default_factory=LinksSpec)
    partitions: list[PartitionSpec] = Field(default_factory=list)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    churn: ChurnSpec = Field(default_factory=ChurnSpec)
    adversaries: list[AdversarySpec] = Field(default_factory=list)
    learning: LearningSettings = Field(default_factory=LearningSettings)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    rounds: RoundsSpec = Field(default_factory=RoundsSpec)
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    groups: list[GroupSpec] = Field(default_factory=list)
    timeline: list[TimelineEvent] = Field(default_factory=list)
    without_adversaries: bool = Field(
        default=False,
        description="counterfactual: the same world with every adversary absent",
    )
    sweep: dict[str, Any] | None = None  # expanded by the sweep runner; ignored by one run

    @model_validator(mode="after")
    def _rounds_fit_local_steps(self) -> Scenario:
        # A DiLoCo round is H modelled steps: a timeout shorter than that closes every round
        # on the node's own update (a fallback) and nothing is ever averaged.
        diloco = self.learning.diloco
        if diloco is not None:
            fastest = min(c.step_time.mean for c in self.compute.classes)
            need = diloco.inner_steps * fastest
            timeout = self.protocol_config().round_timeout
            if timeout <= need:
                raise ValueError(
                    f"protocol.round_timeout ({timeout:g} s) must exceed H={diloco.inner_steps} "
                    f"local steps at the fastest compute class's mean step time "
                    f"({need:g} s), or every round closes on the node's own update"
                )
        return self

    @property
    def total_nodes(self) -> int:
        return self.nodes.count + self.churn.joiners.count

    def protocol_config(self) -> ProtocolConfig:
        return self.protocol.to_config()

    def resolved_yaml(self) -> str:
        data = self.model_dump(mode="json", by_alias=True)
        return yaml.safe_dump(_finite(data), sort_keys=False)


def _finite(value: Any) -> Any:
    """YAML has .inf, but JSON-mode dumps make it a string: keep it a float."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if value == "Infinity":
        return math.inf
    return value


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # dotted, e.g. "adversaries.0.count"
    message: str
    line: int | None = None  # 1-based

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.path or '<root>'}: {self.message}"


class ScenarioError(ValueError):
    """A scenario that cannot run; ``problems`` lists every reason, one per field."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


def _line_index(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = str(key.value)
            out[(*path, k)] = key.start_mark.line + 1
            _line_index(value, (*path, k), out)
            out[(*path, k)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, str(i)), out)


def _line_for(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


# Union members and discriminator tags that pydantic adds to an error's location.
_LOC_TAGS = frozenset(
    {"constant", "uniform", "exponential", "lognormal", "weibull", "normal"}
    | {"int", "float", "str", "bool", "list", "dict", "none"}
)


def _clean_loc(loc: tuple[int | str, ...], lines: dict[tuple[str, ...], int]) -> tuple[str, ...]:
    kept: list[str] = []
    for raw in loc:
        p = str(raw)
        if (*kept, p) not in lines and (p in _LOC_TAGS or "[" in p):
            continue
        kept.append(p)
    return tuple(kept)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate YAML text; raise ScenarioError listing every problem."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ScenarioError(source, [Problem("", f"not valid YAML: {exc}", line)]) from None
    if not isinstance(data, dict) or root is None:
        raise ScenarioError(source, [Problem("", "the file must be a YAML mapping", 1)])
    lines: dict[tuple[str, ...], int] = {}
    _line_index(root, (), lines)
    return scenario_from_data(data, source, lines)


def scenario_from_data(
    data: dict[str, Any], source: str = "<dict>", lines: dict[tuple[str, ...], int] | None = None
) -> Scenario:
    """Validate a scenario given as a mapping (YAML already parsed, or built in Python): the
    schema, then feasibility; raise ScenarioError listing every problem (``lines``: where
    each key sits in the source text, when there is one)."""
    lines = {} if lines is None else lines
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _clean_loc(err["loc"], lines)
            if err["type"] == "swarm_cross_field":  # (field, message) pairs inside one block
                for field, msg in (err.get("ctx") or {})["problems"]:
                    at = (*loc, field)
                    problems.append(Problem(".".join(at), msg, _line_for(lines, at)))
                continue
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(".".join(loc), msg, _line_for(lines, loc)))
        raise ScenarioError(source, _dedupe(problems)) from None
    return checked_feasible(scenario, source, lines)


def checked_feasible(
    scenario: Scenario, source: str = "<scenario>", lines: dict[tuple[str, ...], int] | None = None
) -> Scenario:
    """``scenario`` if it can run, else ScenarioError with every ``check_feasible`` problem."""
    problems = check_feasible(scenario)
    if problems:
        lines = {} if lines is None else lines
        raise ScenarioError(
            source,
            [
                Problem(p.path, p.message, _line_for(lines, tuple(p.path.split("."))))
                for p in problems
            ],
        )
    return scenario


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(p), [Problem("", f"cannot read: {exc.strerror}")]) from None
    return parse_scenario(text, str(p))


def check_feasible(s: Scenario) -> list[Problem]:
    """Combinations that pass field validation but cannot possibly run."""
    out: list[Problem] = []
    n = s.nodes.count
    total_adv = 0
    for i, adv in enumerate(s.adversaries):
        k = adv.resolved_count(n)
        total_adv += k
        if adv.sybil and adv.group_size is not None and adv.group_size > k:
            out.append(
                Problem(
                    f"adversaries.{i}.group_size",
                    f"sybil group of {adv.group_size} is larger than this entry's {k} nodes",
                )
            )
    if total_adv > n:
        out.append(Problem("adversaries", f"{total_adv} adversaries but only {n} nodes"))
    elif total_adv == n:
        out.append(Problem("adversaries", "every node is an adversary: nothing to protect"))
    p = s.protocol_config()
    if isinstance(p.quorum, int) and not isinstance(p.quorum, bool) and p.quorum > s.total_nodes:
        out.append(Problem("protocol.quorum", f"quorum {p.quorum} > {s.total_nodes} nodes"))
    if p.min_peers > s.total_nodes:
        out.append(
            Problem("protocol.min_peers", f"min_peers {p.min_peers} > {s.total_nodes} nodes")
        )
    per_shard = s.total_nodes // p.model_shard_total  # nodes are dealt round-robin
    if per_shard < 1:
        out.append(
            Problem(
                "protocol.model_shard_total",
                f"{p.model_shard_total} layer shards but only {s.total_nodes} nodes",
            )
        )
    elif p.model_shard_total > 1 and p.min_peers > per_shard:
        out.append(
            Problem(
                "protocol.min_peers",
                f"min_peers {p.min_peers} > {per_shard} nodes per layer shard",
            )
        )
    if p.model_shard_total > 1:
        out.extend(_check_layer_shards(s, p.model_shard_total, total_adv))
    if p.strategy == "gossip" and p.view_size == 0 and s.total_nodes > 2000:
        out.append(
            Problem("protocol.view_size", "gossip over >2000 nodes needs a bounded view_size > 0")
        )
    for problem in p.rule_params().problems_for(n):
        field, _, message = problem.partition(": ")
        out.append(Problem(f"protocol.{field}", message))
    names = {r.name for r in s.topology.regions}
    for i, part in enumerate(s.partitions):
        for j, group in enumerate(part.groups):
            for k, region in enumerate(group):
                if s.topology.kind != "regions" or region not in names:
                    out.append(
                        Problem(f"partitions.{i}.groups.{j}.{k}", f"unknown region {region!r}")
                    )
    if s.learning.mode == "real" and s.total_nodes > 64:
        out.append(Problem("learning.mode", "real mode is limited to 64 nodes"))
    if s.churn.fraction > 0 and s.churn.fraction * n < 1:
        out.append(Problem("churn.fraction", f"{s.churn.fraction} of {n} nodes is no node"))
    out += _check_groups(s, total_adv)
    return out


def _check_layer_shards(s: Scenario, total: int, random_adversaries: int) -> list[Problem]:
    out: list[Problem] = []
    layers = s.learning.hidden_layers + 1  # the surrogate's layers: its blocks to share out
    if s.learning.mode == "surrogate" and total > layers:
        out.append(
            Problem(
                "protocol.model_shard_total",
                f"{total} layer shards but the surrogate model has only {layers} layers "
                "(learning.hidden_layers + 1)",
            )
        )
    if random_adversaries or any(g.adversary is not None for g in s.groups):
        # A coalition crafts one update for all its members; each shard's tensors differ.
        out.append(Problem("adversaries", "adversaries are not modelled with layer shards"))
    return out


def _check_groups(s: Scenario, random_adversaries: int) -> list[Problem]:
    n = s.nodes.count
    members, issues = resolve_groups(s.groups, n, s.total_nodes, s.seed)
    out = [Problem(i.path, i.message) for i in issues]
    regions = [r.name for r in s.topology.regions]
    classes = [c.name for c in s.compute.classes]
    grouped_adv = 0
    for i, g in enumerate(s.groups):
        if g.region is not None and (s.topology.kind != "regions" or g.region not in regions):
            out.append(Problem(f"groups.{i}.region", f"unknown region {g.region!r}"))
        if g.compute is not None and g.compute not in classes:
            out.append(Problem(f"groups.{i}.compute", f"unknown compute class {g.compute!r}"))
        if g.adversary is not None:
            grouped_adv += len(members.get(g.name, []))
    grouped = sum(len(m) for m in members.values())
    if issues:
        # The groups did not resolve (e.g. one larger than the swarm): the counts below would
        # only repeat that problem as another line.
        return out
    if s.groups and random_adversaries > n - grouped:
        out.append(
            Problem(
                "adversaries",
                f"{random_adversaries} adversaries but only {n - grouped} nodes outside groups",
            )
        )
    if grouped_adv and grouped_adv + random_adversaries >= n:
        out.append(Problem("groups", "every node is an adversary: nothing to protect"))
    if out:
        return out
    offline = {m for g in s.groups if g.start == "offline" for m in members[g.name]}
    offline |= set(range(n, s.total_nodes))  # joiners arrive later
    grouped_set = {m for ms in members.values() for m in ms}
    pool = [i for i in range(n) if i not in grouped_set]
    for issue in check_timeline(s.timeline, members, offline, regions, pool, s.total_nodes, s.seed):
        out.append(Problem(issue.path, issue.message))
    return out
