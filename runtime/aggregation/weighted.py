"""Weighted averaging (FedAvg) with a per-subnet cap on influence.

Why weight by dataset size: a node with twice the data contributes a gradient estimate from
twice the samples, so FedAvg weights are the unbiased choice. Why cap subnets: dataset size is
self-declared and identities are free, so one operator could spin up 50 nodes on one /24 and
own the average. The cap bounds the share of the *total* weight any one subnet can hold.

Water-filling: with subnet totals S_g and cap c, find the level T such that every subnet above
T is cut to T and T = c * sum_g min(S_g, T). Subnets below T keep their weight untouched;
within a subnet relative weights are preserved. If there are fewer than 1/c subnets no level
can satisfy the cap, and the best possible is equal shares, which is what we return.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Spelled out rather than imported: aggregation sits below the protocol package.
TensorDict = dict[str, torch.Tensor]


def subnet_capped_weights(
    weights: Sequence[float], subnets: Sequence[str], cap: float
) -> list[float]:
    """Scale ``weights`` so no subnet holds more than ``cap`` of the total."""
    if len(weights) != len(subnets):
        raise ValueError("weights and subnets differ in length")
    if weights and len(set(subnets)) == len(subnets):
        # One weight per subnet (a flat simulation: every node its own /24): the totals are
        # the weights, and no loop over a dict of them is needed to see that none is capped.
        if min(weights) < 0:
            raise ValueError("weights must be non-negative")
        if _cap_level(sorted(weights, reverse=True), cap) is None:
            return list(weights)
    totals: dict[str, float] = {}
    for w, g in zip(weights, subnets, strict=True):
        if w < 0:
            raise ValueError("weights must be non-negative")
        totals[g] = totals.get(g, 0.0) + w
    level = _cap_level(sorted(totals.values(), reverse=True), cap)
    if level is None:
        return list(weights)
    return [
        w * min(1.0, level / totals[g]) if totals[g] > 0 else 0.0
        for w, g in zip(weights, subnets, strict=True)
    ]


def _cap_level(totals_desc: list[float], cap: float) -> float | None:
    """The water level T, or None when no subnet exceeds the cap."""
    grand = sum(totals_desc)
    if grand <= 0 or totals_desc[0] <= cap * grand:
        return None
    # Suffix sums from the small end: subtracting from the grand total loses tiny subnets.
    suffix = [0.0] * (len(totals_desc) + 1)
    for i in range(len(totals_desc) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + totals_desc[i]
    for k in range(1, len(totals_desc)):
        if k * cap >= 1.0:
            break
        level = cap * suffix[k] / (1.0 - k * cap)  # top k capped, the rest untouched
        if totals_desc[k] <= level <= totals_desc[k - 1]:
            return level
    # Too few subnets for the cap (or the level sits at the smallest one): equal shares.
    return totals_desc[-1]


def weighted_average(updates: Sequence[TensorDict], weights: Sequence[float]) -> TensorDict:
    """sum_i w_i * u_i / sum_i w_i, accumulated in float32, returned in each tensor's dtype."""
    if not updates or len(updates) != len(weights):
        raise ValueError("need one weight per update and at least one update")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    out: TensorDict = {}
    for name, first in updates[0].items():
        acc = first.detach().to(torch.float32) * (weights[0] / total)
        for u, w in zip(updates[1:], weights[1:], strict=True):
            acc.add_(u[name].detach().to(torch.float32), alpha=w / total)
        out[name] = acc.to(first.dtype)
    return out


def weighted_average_flat(rows: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """The same average for updates already flattened to one float32 vector each: a single
    matrix-vector product, which is what makes compact (simulated) models cheap."""
    if not rows or len(rows) != len(weights):
        raise ValueError("need one weight per update and at least one update")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    # numpy: a round's handful of calls cost less there than torch's dispatch (hot path of
    # every simulated close). Float32 throughout, one fixed summation: replicas that accepted
    # the same rows in the same order get bit-identical averages.
    scale = np.array([w / total for w in weights], dtype=np.float32)
    return torch.from_numpy(scale @ np.stack([r.numpy() for r in rows]))
