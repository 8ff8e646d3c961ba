"""Protocol parameters, validated once, shared by both drivers.

Why a frozen dataclass and not pydantic: the core must stay import-light and allocation-cheap
(the simulator builds thousands of nodes). Users never write this class directly: NodeSettings
(ops/) and the scenario schema (sim/) validate user input and map onto it, so the error
messages a person sees come from those layers; here we only guard invariants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from swarm_tune.runtime.aggregation.rules import RuleName, RuleParams
from swarm_tune.runtime.compression.codecs import CompressionError, parse_codec

Strategy = Literal["flat", "gossip"]


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Everything that shapes a node's protocol behaviour.

    Times are in seconds of whatever clock the driver uses (virtual or wall).
    """

    # Rounds -------------------------------------------------------------------------
    round_timeout: float = 30.0
    # An int >= 1 is an absolute count of contributions (own included); a float in (0, 1]
    # is a fraction of the contributors this node expects this round (see strategy).
    quorum: int | float = 1.0
    min_peers: int = 2  # contributions (own included) needed to average; else fall back
    future_window: int = 2  # rounds ahead whose contributions are buffered, not rejected
    max_buffered_per_round: int = 256
    # Membership ---------------------------------------------------------------------
    heartbeat_interval: float = 5.0
    eviction_timeout: float = 60.0
    view_size: int = 0  # 0 = know everyone (flat); >0 = bounded partial view (gossip)
    peer_exchange: int = 4  # peers advertised per heartbeat (partial views only)
    # Validation and reputation ------------------------------------------------------
    norm_factor: float = 4.0  # reject RMS norms above factor * median of accepted norms
    norm_floor: float = 0.0  # ... but never reject below this absolute RMS norm
    norm_history: int = 64  # accepted norms kept for the running median
    norm_warmup: int = 4  # accept up to this many norms before the bound applies
    ban_window: int = 8  # last N verdicts per peer that define its rejection rate
    ban_threshold: float = 0.5  # rejection rate (over a full window) that earns a ban
    ban_duration: float = 300.0
    subnet_cap: float = 0.25  # largest share of an average one subnet may hold
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    # Aggregation strategy -----------------------------------------------------------
    strategy: Strategy = "flat"
    gossip_fanout: int = 4
    # Aggregation rule (runtime/aggregation/rules.py: guarantees and costs) -----------
    aggregation_rule: RuleName = "mean"
    trim_beta: float = 0.2  # trimmed_mean: share of the weight cut at each end, [0, 0.5)
    krum_f: int | float = 0.25  # multi_krum: Byzantine inputs assumed (count, or fraction)
    krum_m: int = 0  # multi_krum: inputs averaged (0 = n - f)
    clip_tau: float = 1.0  # centered_clipping: radius, x median distance to the start
    clip_iterations: int = 3  # centered_clipping: clipping steps
    clip_bucket: int = 2  # centered_clipping: inputs averaged per bucket (1 = no bucketing)
    geomed_iterations: int = 8  # geometric_median: Weiszfeld steps
    # Replica drift and state sync ---------------------------------------------------
    param_sync_every: int = 10  # every Nth round exchanges parameters, not gradients (0=off)
    drift_bound: float = 0.05  # relative sketch distance that triggers a state sync
    lag_rounds: int = 3  # behind the peers' median round by this much -> state sync
    sync_fanout: int = 3  # peers asked for state
    sync_timeout: float = 20.0
    sketch_size: int = 64
    sketch_seed: int = 0x5EED
    # Communication ------------------------------------------------------------------
    # Codec of this node's contributions (runtime/compression grammar: none, fp16, bf16,
    # int8[:B], topk:F[+value stage]); receivers decode whatever a peer names on the wire.
    compression: str = "none"

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.round_timeout > 0:
            problems.append("round_timeout must be > 0")
        if isinstance(self.quorum, bool) or not (
            (isinstance(self.quorum, int) and self.quorum >= 1)
            or (isinstance(self.quorum, float) and 0.0 < self.quorum <= 1.0)
        ):
            problems.append("quorum must be an int >= 1 or a float in (0, 1]")
        if self.min_peers < 1:
            problems.append("min_peers must be >= 1")
        if self.future_window < 0:
            problems.append("future_window must be >= 0")
        if not 0 < self.heartbeat_interval < self.eviction_timeout:
            problems.append("need 0 < heartbeat_interval < eviction_timeout")
        if self.view_size < 0:
            problems.append("view_size must be >= 0")
        if self.norm_factor <= 1.0:
            problems.append("norm_factor must be > 1")
        if not 0.0 < self.ban_threshold <= 1.0:
            problems.append("ban_threshold must be in (0, 1]")
        if self.ban_window < 1 or self.ban_duration < 0:
            problems.append("ban_window must be >= 1 and ban_duration >= 0")
        if not 0.0 < self.subnet_cap <= 1.0:
            problems.append("subnet_cap must be in (0, 1]")
        if not (0 <= self.ipv4_prefix <= 32 and 0 <= self.ipv6_prefix <= 128):
            problems.append("ipv4_prefix must be in [0, 32] and ipv6_prefix in [0, 128]")
        if self.strategy not in ("flat", "gossip"):
            problems.append("strategy must be 'flat' or 'gossip'")
        if self.gossip_fanout < 1:
            problems.append("gossip_fanout must be >= 1")
        if self.param_sync_every < 0 or self.lag_rounds < 1 or self.sync_fanout < 1:
            problems.append("param_sync_every >= 0, lag_rounds >= 1, sync_fanout >= 1")
        if not self.drift_bound > 0 or self.sketch_size < 1:
            problems.append("drift_bound must be > 0 and sketch_size >= 1")
        problems += self.rule_params().problems()
        try:
            parse_codec(self.compression)
        except CompressionError as e:
            problems.append(f"compression: {e}")
        if problems:
            raise ValueError("invalid ProtocolConfig: " + "; ".join(problems))

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
