"""Protocol parameters: the one definition of every knob, its default, unit, range and doc.

Why here and nowhere else: scenario YAML (sim/scenario.py), ``SWARM_*`` settings
(ops/settings.py), run manifests (ops/manifest.py), ``swarm-tune config params`` and
docs/protocol-parameters.md are all *generated* from the fields below (ops/protocol_fields.py
turns them into pydantic fields). Adding a parameter is adding one ``param(...)`` line here;
changing a default is editing one number (tests/test_one_schema.py proves it by doing so).

Why a frozen dataclass and not pydantic: the core must stay import-light and allocation-cheap
(the simulator builds thousands of nodes) and must not depend on a validation framework. The
value checks live here too, once: :func:`param_problem` for one value (its range), and
:func:`config_problems` for a whole set (ranges plus the rules that tie two fields together).
Every other layer calls these, so a rule is never written twice and every message names the
field in the core's vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from swarm_tune.runtime.aggregation.rules import RULES, RuleName, RuleParams

Strategy = Literal["flat", "gossip", "group"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass(frozen=True, slots=True)
class Range:
    """The allowed values of one parameter; ``None`` bounds are open-ended."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: lo itself is not allowed
    integer: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return " | ".join(self.choices)
        if self.lo is not None and self.hi is not None:
            return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return "any"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, in a user's words (None if it is)."""
        if self.choices:
            if value not in self.choices:
                return "must be one of " + ", ".join(repr(c) for c in self.choices)
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if self.integer and not isinstance(value, int):
            return "must be a whole number"
        if not math.isfinite(value):
            return "must be a finite number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            if (value <= lo if self.lo_open else value < lo) or value > hi:
                if self.lo_open:
                    return f"must be in ({lo:g}, {hi:g}]"
                return f"must be between {lo:g} and {hi:g}"
        elif lo is not None:
            if self.lo_open and value <= lo:
                return f"must be a number greater than {lo:g}"
            if not self.lo_open and value < lo:
                return f"must be at least {lo:g}"
        return None


def _quorum_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return "must be a peer count or a fraction"
    if isinstance(value, int):
        return None if value >= 1 else "a peer count must be at least 1"
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return None
    return "must be a peer count (a whole number >= 1) or a fraction in (0, 1]"


DIRECTION_TESTS = ("auto", "always", "never")  # not on/off: YAML reads those as booleans
POSITIVE = Range(0, lo_open=True)
COUNT = Range(1, integer=True)
NON_NEGATIVE_INT = Range(0, integer=True)
FRACTION = Range(0, 1, lo_open=True)


def param(default: Any, doc: str, rng: Range | None, unit: str = "") -> Any:
    """A ProtocolConfig field with its schema (``rng`` None: a custom check, see CHECKS)."""
    return field(default=default, metadata={"doc": doc, "unit": unit, "range": rng})


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Everything that shapes a node's protocol behaviour.

    Times are in seconds of whatever clock the driver uses (virtual or wall).
    """

    # Rounds -------------------------------------------------------------------------
    round_timeout: float = param(30.0, "Close a round after this long.", POSITIVE, "s")
    quorum: int | float = param(
        1.0,
        "Close a round early at this many contributions (int, own included) or this "
        "fraction of the contributors expected (float in (0, 1]).",
        None,
    )
    min_peers: int = param(
        2,
        "Contributions (own included) needed to apply an average, and swarm members (itself "
        "included) a node waits for before its first round; with fewer contributions it "
        "falls back to its own update, and such rounds do not count towards max_rounds.",
        COUNT,
    )
    start_deadline: float = param(
        30.0,
        "Wait at most this long for min_peers members before the first round, then proceed "
        "(rounds fall back, and do not count, until peers arrive); 0 = wait forever.",
        Range(0),
        "s",
    )
    future_window: int = param(
        2, "Rounds ahead whose contributions are buffered, not rejected.", NON_NEGATIVE_INT
    )
    max_buffered_per_round: int = param(
        256, "Buffered early contributions per future round.", COUNT
    )
    # Membership ---------------------------------------------------------------------
    heartbeat_interval: float = param(5.0, "Time between heartbeats.", POSITIVE, "s")
    eviction_timeout: float = param(60.0, "Evict a peer silent this long.", POSITIVE, "s")
    contributor_rounds: int = param(
        3,
        "A live peer counts as an expected contributor (the quorum waits for it) only if it "
        "sent a contribution for one of the last N rounds; 0 = every live peer.",
        NON_NEGATIVE_INT,
    )
    view_size: int = param(
        0,
        "Peers a node knows: 0 = everyone (flat), >0 = bounded partial view.",
        Range(0, integer=True),
    )
    peer_exchange: int = param(
        4,
        "Peers advertised per heartbeat, with the dial hints they declared (peer exchange).",
        NON_NEGATIVE_INT,
    )
    dial_peers: int = param(
        4,
        "Peers a node asks its driver to dial per heartbeat: advertised ones it is not "
        "connected to, and evicted ones (0 = the core never dials).",
        NON_NEGATIVE_INT,
    )
    redial_interval: float = param(
        30.0, "Least time between two dials of the same peer.", POSITIVE, "s"
    )
    # Validation and reputation ------------------------------------------------------
    norm_factor: float = param(
        4.0,
        "Reject RMS norms above this factor x the median of accepted norms.",
        Range(1, lo_open=True),
    )
    norm_floor: float = param(0.0, "Never reject below this absolute RMS norm.", Range(0))
    norm_history: int = param(64, "Accepted norms kept for the running median.", COUNT)
    norm_warmup: int = param(4, "Norms accepted before the norm bound applies.", NON_NEGATIVE_INT)
    ban_window: int = param(8, "Last N verdicts per peer that define its rejection rate.", COUNT)
    ban_threshold: float = param(
        0.5, "Rejection rate (over a full window) that earns a ban.", FRACTION
    )
    ban_duration: float = param(300.0, "How long a ban lasts.", Range(0), "s")
    subnet_cap: float = param(0.25, "Largest share of an average one subnet may hold.", FRACTION)
    ipv4_prefix: int = param(
        24, "IPv4 prefix length that defines a subnet.", Range(8, 32, integer=True)
    )
    ipv6_prefix: int = param(
        48, "IPv6 prefix length that defines a subnet.", Range(16, 128, integer=True)
    )
    # Aggregation strategy -----------------------------------------------------------
    strategy: Strategy = param(  # noqa: RUF009 (param() is dataclasses.field())
        "flat", "Who gets each update.", Range(choices=STRATEGIES)
    )
    gossip_fanout: int = param(4, "Peers each update is sent to (gossip).", COUNT)
    group_audit: int = param(
        1,
        "group: auditors per round (drawn from the round and its members); each recomputes "
        "one slice it picks after its owner committed to it (0 = commitments only).",
        NON_NEGATIVE_INT,
    )
    group_size: int = param(
        0,
        "group: members per subgroup (Moshpit-style): each round the contributors are dealt "
        "into subgroups of this size by a fresh seeded permutation, each averages among "
        "itself, and replicas converge as the subgroups mix (0 = one group of everyone).",
        None,
    )
    model_shard_total: int = param(
        1,
        "Layer shards: the transformer blocks are split into this many contiguous slices; a "
        "node trains and exchanges one slice (its model_shard_index), and only nodes of the "
        "same slice average together (1 = every node trains the whole model).",
        COUNT,
    )
    # Aggregation rule (runtime/aggregation/rules.py: guarantees and costs) -----------
    aggregation_rule: RuleName = param(  # noqa: RUF009 (param() is dataclasses.field())
        "geometric_median",
        "How accepted contributions are combined (default chosen by docs/robustness.md).",
        None,
    )
    direction_test: str = param(
        "auto",
        "Reject updates pointing against the round's median (validation.py): always, never, or "
        "auto = filter with every rule, but count its verdicts towards bans only with the "
        "weighted mean (docs/robustness.md: robust rules let sign-flips cost 5%, and its "
        "bans hit honest outliers in small pools).",
        Range(choices=DIRECTION_TESTS),
    )
    near_duplicate_ratio: float = param(
        0.25,
        "Gradient updates closer to each other than this multiple of the pool's median pairwise "
        "distance are copies of one update (colluders adding noise) and share one update's "
        "weight, as bit-identical copies do (runtime/aggregation/near_duplicates.py); 0 = only "
        "bit-identical copies.",
        Range(0, 0.5),
    )
    trim_beta: float = param(0.2, "trimmed_mean: share of the weight cut at each end.", None)
    krum_f: int | float = param(
        0.25, "multi_krum: Byzantine inputs assumed (count, or fraction).", None
    )
    krum_m: int = param(0, "multi_krum: inputs averaged (0 = n - f).", NON_NEGATIVE_INT)
    clip_tau: float = param(
        1.0, "centered_clipping: radius, x median distance to the start.", POSITIVE
    )
    clip_iterations: int = param(3, "centered_clipping: clipping steps.", COUNT)
    clip_bucket: int = param(
        2, "centered_clipping: inputs averaged per bucket (1 = no bucketing).", COUNT
    )
    geomed_iterations: int = param(8, "geometric_median: Weiszfeld steps.", COUNT)
    # Replica drift and state sync ---------------------------------------------------
    param_sync_every: int = param(
        10, "Every Nth round averages parameters, not gradients (0 = off).", NON_NEGATIVE_INT
    )
    drift_bound: float = param(
        0.05, "Relative sketch distance to the peers that triggers a state sync.", POSITIVE
    )
    early_params_gap: int = param(
        5,
        "A swarm-wide drift alarm (this node and at least a quarter of the same-round sketches "
        "it hears, at least two, beyond drift_bound from their median: halves of a healed "
        "partition) brings a parameter round forward to two rounds ahead, announced in "
        "heartbeats (peers adopt the earliest that a quarter of them, at least two, announce), "
        "unless a parameter round "
        "was less than this many rounds ago; 0 = off.",
        NON_NEGATIVE_INT,
    )
    lag_rounds: int = param(3, "Behind the peers' median round by this much: state sync.", COUNT)
    sync_fanout: int = param(3, "Peers asked for state.", COUNT)
    sync_timeout: float = param(20.0, "Give up on a state sync after this long.", POSITIVE, "s")
    sync_moment_bound: float = param(
        8.0,
        "State sync also carries the optimizer's moments (Adam m, v, step), averaged over the "
        "agreeing responders; a response whose |m| exceeds this multiple of sqrt(v) on any "
        "coordinate is refused (Adam keeps |m| <= 7.27 sqrt(v) with betas (0.9, 0.999); "
        "runtime/protocol/moments.py). 0 = state sync carries parameters only.",
        Range(0),
    )
    sketch_size: int = param(64, "Coordinates in a parameter sketch.", COUNT)
    sketch_seed: int = param(
        0x5EED, "Seed of the sketch's random projection.", Range(0, integer=True)
    )

    # Communication ------------------------------------------------------------------
    compression: str = param(
        "none",
        "Codec of this node's contributions (runtime/compression grammar); receivers "
        "decode whatever a peer names on the wire.",
        None,
    )

    def __post_init__(self) -> None:
        problems = config_problems({f.name: getattr(self, f.name) for f in FIELDS})
        if problems:
            raise ProtocolConfigError(problems)

    @property
    def judges_direction(self) -> bool:
        """Whether the close-time direction test runs (``direction_test``)."""
        return self.direction_test != "never"

    @property
    def direction_bans(self) -> bool:
        """Whether direction rejections count towards a ban. With a robust rule (``auto``) the
        test is a per-round filter only: what it misses the rule bounds, and in a small pool
        an honest outlier looks hostile round after round (measured: 7 honest bans of 8)."""
        if self.direction_test == "auto":
            return self.aggregation_rule == "mean"
        return self.direction_test == "always"

    def rule_params(self) -> RuleParams:
        return RuleParams(
            self.aggregation_rule,
            self.trim_beta,
            self.krum_f,
            self.krum_m,
            self.clip_tau,
            self.clip_iterations,
            self.clip_bucket,
            self.geomed_iterations,
        )

    def quorum_count(self, expected: int) -> int:
        """Contributions (own included) that close a round early, given how many we expect."""
        if isinstance(self.quorum, int):
            return self.quorum
        return max(1, math.ceil(self.quorum * expected - 1e-9))


class ProtocolConfigError(ValueError):
    """Invalid parameters; ``problems`` is one (field, message) pair per problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("invalid ProtocolConfig: " + "; ".join(f"{f} {m}" for f, m in problems))


FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(ProtocolConfig)
NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
DEFAULTS: Mapping[str, Any] = {f.name: f.default for f in FIELDS}


def param_doc(name: str) -> tuple[str, str, str]:
    """(doc, unit, range) of one parameter, for generated docs and help texts."""
    meta = _FIELD[name].metadata
    rng: Range | None = meta["range"]
    return meta["doc"], meta["unit"], rng.describe() if rng is not None else _CUSTOM_RANGE[name]


def param_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for parameter ``name`` (None if it is)."""
    rng: Range | None = _FIELD[name].metadata["range"]
    return rng.problem(value) if rng is not None else _CUSTOM[name](value)


def config_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of a full or partial set of values (missing names take the default)."""
    out = [
        (name, msg)
        for name in NAMES
        if name in values and (msg := param_problem(name, values[name])) is not None
    ]
    if out:
        return out  # the rules below compare values that must first be valid on their own
    v = {**DEFAULTS, **values}
    if v["heartbeat_interval"] >= v["eviction_timeout"]:
        out.append(
            (
                "eviction_timeout",
                f"must be greater than heartbeat_interval={v['heartbeat_interval']:g} "
                f"(got {v['eviction_timeout']:g}), or every peer is evicted between heartbeats",
            )
        )
    if isinstance(v["quorum"], int) and v["quorum"] < v["min_peers"]:
        out.append(
            (
                "quorum",
                f"a peer count below min_peers={v['min_peers']} (got {v['quorum']}) closes "
                "rounds before enough updates arrive",
            )
        )
    if v["group_size"] and v["group_size"] < v["min_peers"]:
        out.append(
            (
                "group_size",
                f"a subgroup smaller than min_peers={v['min_peers']} (got {v['group_size']}) "
                "never averages",
            )
        )
    if v["view_size"] and v["gossip_fanout"] > v["view_size"]:
        out.append(("gossip_fanout", f"must not exceed view_size={v['view_size']}"))
    return out


_FIELD = {f.name: f for f in FIELDS}


def _rule_problem(name: str, attr: str = "") -> Any:
    """A rule parameter's check, as runtime/aggregation/rules.py defines it (one place)."""

    def check(value: Any) -> str | None:
        try:
            params = RuleParams(**{"name": "mean", attr or name: value})
        except TypeError:
            return "must be a number"
        for line in params.problems():
            if line.startswith(name):
                return line.partition(": ")[2] or line
        return None

    return check


def _group_size_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be a whole number"
    if value == 1 or value < 0:
        return "must be 0 (one group of everyone) or at least 2 (a group of one averages nothing)"
    return None


def _compression_problem(value: Any) -> str | None:
    if value == "none":  # the default: nothing to parse
        return None
    # Imported here: the codecs need torch, and checking a scenario or a setting must not pay
    # torch's start-up (tests/ops/test_ops_cli_lazy.py holds bad input under a second).
    from swarm_tune.runtime.compression.codecs import CompressionError, parse_codec

    try:
        parse_codec(value)
    except CompressionError as exc:
        return str(exc)
    return None


_CUSTOM = {
    "quorum": _quorum_problem,
    "aggregation_rule": _rule_problem("aggregation_rule", "name"),
    "trim_beta": _rule_problem("trim_beta"),
    "krum_f": _rule_problem("krum_f"),
    "compression": _compression_problem,
    "group_size": _group_size_problem,
}
_CUSTOM_RANGE = {
    "quorum": "int >= 1 | (0, 1]",
    "aggregation_rule": " | ".join(RULES),
    "trim_beta": "[0, 0.5)",
    "krum_f": "int >= 0 | [0, 0.5)",
    "compression": "none | fp16 | bf16 | int8[:B] | int4[:B] | topk:F[+stage]",
    "group_size": "0 | int >= 2",
}
