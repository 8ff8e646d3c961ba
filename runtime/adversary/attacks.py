"""Attacks on aggregation: ONE vocabulary for the simulator and for the real adversarial node.

Why here (``runtime/adversary``) and not in ``sim/`` or ``runtime/net``: both drivers run the
same attacks, and neither may import the other (sim is a world, net is a node; each imports
the runtime only). The runtime is the lowest layer both already depend on, and an attack, like
an aggregation rule, is pure arithmetic on updates: no I/O, no clock, seeded randomness - so it
sits beside ``runtime/aggregation`` and under both drivers. What differs per driver is only
what the attacker *sees*: in the simulator the world hands it the round's honest updates
(omniscient, the threat model of ALIE/IPM); a real node sees the contributions it received.

Every behaviour has one meaning and one numeric knob, ``strength`` (default in brackets):

=============  =========================================================================
name           crafted update (own = the attacker's honest update, H = honest updates seen)
=============  =========================================================================
nan / inf      every entry NaN / +inf
scale          own x strength [100]
sign_flip      own x -strength [1]
noise          own + N(0, (strength x RMS(own))^2) per entry [3]
stale_replay   the first update it ever sent of that kind, forever
alie           mean(H) - z std(H) per coordinate; z from (n, f) (Baruch et al. 2019) unless
               strength is given
ipm            -strength x mean(H) [0.5] (inner-product manipulation, Xie et al. 2020)
min_max        mean(H) - g std(H), the largest g whose distance to every honest update is
               at most the largest honest pairwise distance (Shejwalkar & Houmansadr 2021)
min_sum        the same, bounding the sum of squared distances to the honest updates
mimic          a copy of one honest update (the first in peer-id order), every round
               (Karimireddy et al. 2022: over-weights one shard on non-IID data)
label_flip     data poisoning: the attacker trains on flipped targets (class c -> K-1-c,
               ``flip_labels``) and sends what that honest arithmetic computes
lying_heartbeat
               the update is honest; every heartbeat claims round + strength [1000], a
               dataset of strength x its own size, the negated sketch and an early
               parameter round; every contribution claims the inflated size (``claims.py``)
poisoned_sync  the update is honest; every state-sync response it serves keeps the sketched
               coordinates (so it agrees with honest responders on every sketch) and sends
               -strength [1] x the parameters everywhere else (``claims.py``)
=============  =========================================================================

H always contains the coalition's own honest updates (an attacker trains honestly to stay in
step), so with no view of anyone else the omniscient attacks degrade to estimates from the
coalition's own data, as in the ALIE paper. A coalition crafts ONE update per (round, kind)
and every member sends it: colluders are identical, which is also what a Sybil group on one
/24 looks like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # flip_labels needs no torch function: settings import BEHAVIOURS from here,
    import torch  # and a refused bad setting must not pay 1.4 s of torch import

F32 = npt.NDArray[np.float32]

Behaviour = Literal[
    "nan",
    "inf",
    "scale",
    "sign_flip",
    "noise",
    "stale_replay",
    "alie",
    "ipm",
    "min_max",
    "min_sum",
    "mimic",
    "label_flip",
    "lying_heartbeat",
    "poisoned_sync",
]
BEHAVIOURS: tuple[Behaviour, ...] = get_args(Behaviour)
# Behaviours that look at the honest updates of the round.
OMNISCIENT: frozenset[Behaviour] = frozenset({"alie", "ipm", "min_max", "min_sum", "mimic"})
DEFAULT_STRENGTH: dict[Behaviour, float] = {
    "scale": 100.0,
    "sign_flip": 1.0,
    "noise": 3.0,
    "ipm": 0.5,
    "lying_heartbeat": 1000.0,
    "poisoned_sync": 1.0,
}
# Behaviours whose update is the honest arithmetic: the attack is elsewhere (the data it
# trains on, the claims it makes, the state it serves).
HONEST_UPDATE: frozenset[Behaviour] = frozenset({"label_flip", "lying_heartbeat", "poisoned_sync"})
_SEARCH_STEPS = 30  # bisection steps of min-max / min-sum (g to ~1e-9 of its bracket)


class AttackError(ValueError):
    """An unknown behaviour or an out-of-range strength."""


@dataclass(frozen=True, slots=True)
class AttackParams:
    behaviour: Behaviour
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise AttackError(f"unknown attack {self.behaviour!r}; one of {', '.join(BEHAVIOURS)}")
        if self.strength is not None and not math.isfinite(self.strength):
            raise AttackError(f"attack strength must be a finite number, got {self.strength}")

    @property
    def resolved_strength(self) -> float:
        if self.strength is not None:
            return self.strength
        return DEFAULT_STRENGTH.get(self.behaviour, 0.0)


def alie_z(n: int, f: int) -> float:
    """Baruch et al.: the largest z for which the crafted value still has ``s`` honest
    updates further from the mean, s = floor(n/2 + 1) - f."""
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n if n > 0 else 0.5
    return NormalDist().inv_cdf(min(max(p, 1e-6), 1 - 1e-6))


def _pairwise_sq(h: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    sq = np.einsum("ij,ij->i", h, h)
    return np.asarray(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (h @ h.T), 0.0), np.float64)


def _largest_step(
    h: npt.NDArray[np.float64],
    centre: npt.NDArray[np.float64],
    step: npt.NDArray[np.float64],
    kind: Literal["min_max", "min_sum"],
) -> float:
    """The largest g with ``centre + g step`` inside the min-max / min-sum bound."""
    pair = _pairwise_sq(h)
    bound = float(pair.max()) if kind == "min_max" else float(pair.sum(axis=1).max())

    def fits(g: float) -> bool:
        d = np.sum((h - (centre + g * step)) ** 2, axis=1)
        return float(d.max() if kind == "min_max" else d.sum()) <= bound

    hi = 1.0
    while fits(hi) and hi < 1e6:
        hi *= 2.0
    lo = 0.0
    for _ in range(_SEARCH_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def craft_from_view(params: AttackParams, honest: Sequence[F32], n: int, f: int) -> F32:
    """An omniscient behaviour's update from the honest updates seen (at least one)."""
    if not honest:
        raise AttackError("an omniscient attack needs at least one honest update")
    b = params.behaviour
    if b == "mimic":
        return np.array(honest[0], dtype=np.float32)
    h = np.stack(honest).astype(np.float64)
    mean = h.mean(axis=0)
    std = h.std(axis=0)
    if b == "alie":
        z = params.strength if params.strength is not None else alie_z(n, f)
        return np.asarray(mean - z * std, dtype=np.float32)
    if b == "ipm":
        return np.asarray(-params.resolved_strength * mean, dtype=np.float32)
    if b in ("min_max", "min_sum"):
        if len(honest) < 2 or not float(std.max()) > 0:
            return np.asarray(mean, dtype=np.float32)
        step = -std / float(np.linalg.norm(std))
        g = _largest_step(h, mean, step, b)  # type: ignore[arg-type]
        return np.asarray(mean + g * step, dtype=np.float32)
    raise AttackError(f"{b!r} does not use the honest updates")


def craft_from_own(
    params: AttackParams, own: F32, first: F32 | None, rng: np.random.Generator
) -> F32:
    """A behaviour that only needs the attacker's own update (``first``: stale_replay)."""
    b = params.behaviour
    s = params.resolved_strength
    if b == "nan":
        return np.full_like(own, math.nan)
    if b == "inf":
        return np.full_like(own, math.inf)
    if b == "scale":
        return np.asarray(own * s, dtype=np.float32)
    if b == "sign_flip":
        return np.asarray(own * -s, dtype=np.float32)
    if b == "noise":
        rms = float(np.sqrt(np.mean(own.astype(np.float64) ** 2))) if own.size else 0.0
        noise = rng.standard_normal(own.shape) * (s * rms)
        return np.asarray(own + noise, dtype=np.float32)
    if b == "stale_replay":
        return own if first is None else first
    if b in HONEST_UPDATE:
        return own
    raise AttackError(f"{b!r} needs the honest updates of the round")


def flip_labels(targets: torch.Tensor, classes: int) -> torch.Tensor:
    """label_flip's poisoned targets: class ``c`` becomes ``classes - 1 - c`` (a fixed
    permutation, so the attacker learns a consistently wrong task, the strongest flip)."""
    return (classes - 1) - targets
