"""Aggregation rules behind one interface, chosen per run (``ProtocolConfig.aggregation_rule``).

Why pluggable: peers are strangers, and which rule survives which attack at what cost is a
measured trade-off (docs/robustness.md), not a constant. The protocol core calls ONE function,
``Rule.combine(rows, weights, seed)``, on the round's accepted updates, so the SimPy and the
libp2p drivers use every rule unchanged.

Contract every rule keeps:
* Inputs are the flat float32 updates of the round's contributors (ours included) in peer-id
  order, one influence weight each, and a seed derived from the round and the contributor set.
  Same inputs -> same bits, whatever order they arrived in (the core sorts by peer id; rules
  that shuffle use the seed, which every replica derives alike).
* Influence weights compose the dataset-size weights with duplicate collapsing (k identical
  or near-identical updates count as one, near_duplicates.py) and the subnet cap
  (``influence_weights``): for the weighted mean exactly as before when no two updates are
  copies (FedAvg weights, capped);
  for robust rules each self-declared size is first clipped to the round's median size, so a
  minority cannot buy influence by claiming a huge dataset, and then the subnet cap bounds
  every /24's share of the weight. Each rule then uses weights where its statistic allows
  (weighted quantiles, weighted Krum neighbourhoods, weighted clipping/Weiszfeld steps).

rule               guarantee (Byzantine share of the weight)             cost per close
mean               none: one input can move it anywhere                  O(n d)
median             honest range per coordinate while < 1/2               O(n log n d)
trimmed_mean       honest range per coordinate while < beta              O(n log n d)
multi_krum         selected inputs near honest ones while f < (n-2)/2    O(n^2 d)
centered_clipping  error O(sqrt(delta) spread) for delta < ~0.1-0.2      O(iterations n d)
geometric_median   bounded error while < 1/2                             O(iterations n d)

Memory: robust rules stack the n updates (n * d * 4 bytes); the weighted mean does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from swarm_tune.runtime.aggregation.centered import centered_clipping, geometric_median
from swarm_tune.runtime.aggregation.coordinate import weighted_median, weighted_trimmed_mean
from swarm_tune.runtime.aggregation.krum import multi_krum

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

RuleName = Literal[
    "mean", "median", "trimmed_mean", "multi_krum", "centered_clipping", "geometric_median"
]
RULES: tuple[RuleName, ...] = (
    "mean",
    "median",
    "trimmed_mean",
    "multi_krum",
    "centered_clipping",
    "geometric_median",
)


class Rule(Protocol):
    @property
    def name(self) -> RuleName: ...

    @property
    def robust(self) -> bool: ...

    @property
    def seeded(self) -> bool:
        """Whether ``combine`` uses its seed (bucketing): others are handed 0, so a round
        close does not hash its contributor list for nothing."""
        ...

    def combine(self, rows: F32, weights: F64, seed: int) -> F32:
        """One aggregate of ``rows`` ([n, d], peer-id order) under ``weights`` ([n], > 0)."""
        ...


@dataclass(frozen=True, slots=True)
class Mean:
    """FedAvg: sum_i w_i x_i / sum_i w_i. No robustness; the reference for cost and loss."""

    name: RuleName = "mean"
    robust: bool = False
    seeded: bool = False

    def combine(self, rows: F32, weights: F64, seed: int) -> F32:
        return weighted_mean(rows, weights)


#: Columns per block of ``weighted_mean``: two float64 blocks of 512 KB stay in L2.
MEAN_BLOCK = 1 << 16


def weighted_mean(rows: F32 | Sequence[F32], weights: F64, out: F32 | None = None) -> F32:
    """``sum_i w_i x_i / sum_i w_i`` accumulated in float64, block by block.

    Why not ``weights @ rows.astype(float64)``: that converts the whole [n, d] stack to
    float64 first (2x its size in a temporary) and leaves the summation order to the BLAS
    kernel, which may differ between CPUs. Here every value is one IEEE multiply and one
    add per row in row order (numpy ufuncs, no fused multiply-add): the same bits on every
    machine, ~3x faster on a 124 MB update (memory-bound: each input is read once).
    ``out``: float32 memory of ``d`` to write the mean into (a driver's reused buffer),
    else a new array; the same bits either way."""
    n, d = len(rows), len(rows[0])
    if out is None:
        out = np.empty(d, dtype=np.float32)
    total = float(weights.sum())
    acc = np.empty(min(d, MEAN_BLOCK), dtype=np.float64)
    tmp = np.empty_like(acc)
    for lo in range(0, d, MEAN_BLOCK):
        hi = min(d, lo + MEAN_BLOCK)
        a, t = acc[: hi - lo], tmp[: hi - lo]
        np.multiply(rows[0][lo:hi], weights[0], out=a)
        for i in range(1, n):
            np.multiply(rows[i][lo:hi], weights[i], out=t)
            a += t
        a /= total
        out[lo:hi] = a
    return out


@dataclass(frozen=True, slots=True)
class Median:
    """Weighted coordinate-wise median (coordinate.py)."""

    name: RuleName = "median"
    robust: bool = True
    seeded: bool = False

    def combine(self, rows: F32, weights: F64, seed: int) -> F32:
        return weighted_median(rows, weights)


@dataclass(frozen=True, slots=True)
class TrimmedMean:
    """Weighted coordinate-wise trimmed mean, ``beta`` of the weight cut at each end."""

    beta: float
    name: RuleName = "trimmed_mean"
    robust: bool = True
    seeded: bool = False

    def combine(self, rows: F32, weights: F64, seed: int) -> F32:
        return weighted_trimmed_mean(rows, weights, self.beta)


@dataclass(frozen=True, slots=True)
class MultiKrum:
    """Weighted Multi-Krum (krum.py): mean of the ``m`` most central of n, ``f`` assumed bad."""

    f: int | float
    m: int
    name: RuleName = "multi_krum"
    robust: bool = True
    seeded: bool = False

    def combine(self, rows: F32, weights: F64, seed: int) -> F32:
        return multi_krum(rows, weights, self.f, self.m)


@dataclass(frozen=True, slots=True)
class CenteredClipping:
    """Centered clipping from the coordinate median, on seeded buckets (centered.py)."""

    tau: float
    iterations: int
    bucket: int
    name: RuleName = "centered_clipping"
    robust: bool = True
    seeded: bool = True

    def combine(self, rows: F32, weights: F64, seed: int) -> F32:
        return centered_clipping(rows, weights, self.tau, self.iterations, self.bucket, seed)


@dataclass(frozen=True, slots=True)
class GeometricMedian:
    """Smoothed Weiszfeld iterations (RFA) from the coordinate median (centered.py)."""

    iterations: int
    name: RuleName = "geometric_median"
    robust: bool = True
    seeded: bool = False

    def combine(self, rows: F32, weights: F64, seed: int) -> F32:
        return geometric_median(rows, weights, self.iterations)


@dataclass(frozen=True, slots=True)
class RuleParams:
    """The rule and its parameters as ``ProtocolConfig`` carries them."""

    name: str
    trim_beta: float = 0.2
    krum_f: int | float = 0.25
    krum_m: int = 0
    clip_tau: float = 1.0
    clip_iterations: int = 3
    clip_bucket: int = 2
    geomed_iterations: int = 8

    def problems(self) -> list[str]:
        """Every out-of-range parameter, as ``name: reason`` lines (empty when valid)."""
        out = []
        if self.name not in RULES:
            out.append(f"aggregation_rule: unknown rule {self.name!r}; one of {', '.join(RULES)}")
        if not 0.0 <= self.trim_beta < 0.5:
            out.append(f"trim_beta: must be in [0, 0.5), got {self.trim_beta}")
        f = self.krum_f
        if isinstance(f, bool) or not (
            (isinstance(f, int) and f >= 0) or (isinstance(f, float) and 0.0 <= f < 0.5)
        ):
            out.append(f"krum_f: must be a count >= 0 or a fraction in [0, 0.5), got {f}")
        if self.krum_m < 0:
            out.append(f"krum_m: must be >= 0 (0 = n - f), got {self.krum_m}")
        if not self.clip_tau > 0:
            out.append(f"clip_tau: must be > 0, got {self.clip_tau}")
        if self.clip_iterations < 1 or self.geomed_iterations < 1:
            out.append("clip_iterations and geomed_iterations must be >= 1")
        if self.clip_bucket < 1:
            out.append(f"clip_bucket: must be >= 1, got {self.clip_bucket}")
        return out

    def problems_for(self, nodes: int) -> list[str]:
        """Problems that depend on how many nodes the run has (Krum needs f < n / 2)."""
        f = self.krum_f
        if self.name == "multi_krum" and isinstance(f, int) and 2 * f >= nodes:
            return [f"krum_f: f={f} must be < n/2 = {nodes / 2:g} for {nodes} nodes"]
        return []


def make_rule(p: RuleParams) -> Rule:
    problems = p.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if p.name == "median":
        return Median()
    if p.name == "trimmed_mean":
        return TrimmedMean(p.trim_beta)
    if p.name == "multi_krum":
        return MultiKrum(p.krum_f, p.krum_m)
    if p.name == "centered_clipping":
        return CenteredClipping(p.clip_tau, p.clip_iterations, p.clip_bucket)
    if p.name == "geometric_median":
        return GeometricMedian(p.geomed_iterations)
    return Mean()


def influence_weights(
    sizes: Sequence[float],
    subnets: Sequence[str],
    cap: float,
    robust: bool,
    copy_labels: Sequence[int | None] = (),
) -> list[float]:
    """Dataset-size weights composed with duplicate collapsing (``copy_labels``: equal labels
    mark copies of one update, near_duplicates.duplicate_labels) and the subnet cap (see the
    module docstring)."""
    # Imported here: weighted.py needs torch, and the parameter schema imports this module
    # to check a scenario or a setting, which must not cost torch's start-up.
    from swarm_tune.runtime.aggregation.weighted import subnet_capped_weights

    if robust and sizes:
        ordered = sorted(sizes)
        ceiling = ordered[(len(ordered) - 1) // 2]
        sizes = [min(s, ceiling) for s in sizes]
    if copy_labels:
        sizes = collapse_duplicates(sizes, copy_labels)
    return subnet_capped_weights(sizes, subnets, cap)


def collapse_duplicates(weights: Sequence[float], copy_labels: Sequence[int | None]) -> list[float]:
    """``k`` copies of one update (equal labels) share the weight of one (their mean weight,
    split k ways).

    Why: independent honest trainers never produce identical or nearly identical updates,
    colluders (Sybils, mimics, coordinated crafted updates) do, and k copies otherwise buy k
    times the influence whatever the rule. Which updates are copies - bit-identical, or
    closer than honest updates ever are - is near_duplicates.duplicate_labels' call."""
    present = [label for label in copy_labels if label is not None]
    if len(set(present)) == len(present):  # the usual case: no copies, nothing to collapse
        return list(weights)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(copy_labels):
        if label is not None:
            groups.setdefault(label, []).append(i)
    out = list(weights)
    for members in groups.values():
        if len(members) > 1:
            share = sum(weights[i] for i in members) / len(members) ** 2
            for i in members:
                out[i] = share
    return out


def aggregate(
    rule: Rule, rows: Sequence[F32], weights: Sequence[float], seed: int, out: F32 | None = None
) -> F32:
    """``rule`` on flat rows (already in peer-id order) with positive total weight. ``out``:
    memory the weighted mean of flat float32 rows is written into (other rules ignore it)."""
    if not rows or len(rows) != len(weights):
        raise ValueError("need one weight per update and at least one update")
    w = np.asarray(weights, dtype=np.float64)
    if not w.sum() > 0:
        raise ValueError("weights must sum to a positive number")
    shape = rows[0].shape
    flat = len(shape) == 1 and all(r.dtype == np.float32 and r.shape == shape for r in rows)
    if isinstance(rule, Mean) and flat:
        return weighted_mean(rows, w, out)  # reads the rows in place: no [n, d] stack
    # np.array: np.stack's copy without its per-call checks (~4 us of ~6 on a gossip pool).
    return rule.combine(np.array(rows).astype(np.float32, copy=False), w, seed)
