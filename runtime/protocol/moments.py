"""Optimizer moments in state sync: what a responder sends and what a loader may accept.

Why state sync carries them: after a healed split, replicas that load the swarm's parameters
but keep their own Adam moments drift apart again faster than before the cut (measured in
benchmarks/bench_split_regrowth.py): the same averaged gradient moves equal parameters apart
through different moments. So a state response carries the responder's first and second
moments and its step count, and the loader combines them over the agreeing responders like
the parameters (sync.py: mean of one or two, coordinate median of more; the step count:
their median, as the round). Optimizers without
moments (SGD) send none; ``sync_moment_bound`` = 0 turns the whole thing off.

Why these checks, on each response before it counts (moments are peer input and nothing in
the parameters' agreement vouches for them):

* names, shapes and dtypes are the model's (``ModelSpec``), every value finite, ``v >= 0``;
* ``|m| <= bound * sqrt(v)`` on every coordinate. This is an invariant of Adam itself: from
  zero moments, for ANY gradient sequence, Cauchy-Schwarz gives
  ``m^2 <= (1-b1)^2 / ((1-b2) (1 - b1^2/b2)) * v`` (7.27^2 for the usual betas (0.9,
  0.999)), and it survives averaging (``mean |m| <= bound * mean sqrt(v) <= bound *
  sqrt(mean v)``, Jensen). So whatever a liar in the agreeing group sends, the loaded state's
  step ``m / sqrt(v)`` per coordinate stays inside what honest Adam can produce (with three
  or more the coordinate median: a majority of usable responses sit on the median's side);
* the usable responses' ``v`` RMS must lie within ``norm_factor`` of each other, or no
  moments are loaded at all: a huge ``v`` satisfies the invariant but would freeze learning
  for thousands of steps, and with two responders nobody can tell which one lies. So a liar
  can at most make the loader keep its own moments (parameter-only sync), never poison them;
* the step count is a whole number in ``[1, MAX_STEP]`` (a responder that never stepped has
  nothing to give); the median of the usable ones is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from swarm_tune.runtime.protocol.tensors import ModelSpec, TensorDict, all_finite, rms_norm

MAX_STEP = 1 << 40
# Slack of the |m| <= bound * sqrt(v) test: float32 rounding, and v underflowing to 0 where
# m did not. A liar using it moves a coordinate by lr * 1e-12 / eps = lr * 1e-4 at most.
_SLACK = 1e-12


@dataclass(frozen=True, slots=True)
class Moments:
    """An optimizer's per-parameter moments, named like the parameters, and its step count
    (torch Adam/AdamW: ``exp_avg``, ``exp_avg_sq``, ``step``)."""

    exp_avg: TensorDict = field(repr=False, compare=False)
    exp_avg_sq: TensorDict = field(repr=False, compare=False)
    step: int


def moments_problem(spec: ModelSpec, m: Moments, bound: float) -> str | None:
    """Why one response's moments cannot be used (None if they can); see the module doc."""
    if not 1 <= m.step <= MAX_STEP:
        return "step"
    for part in (m.exp_avg, m.exp_avg_sq):
        reason = spec.mismatch(part)
        if reason is not None:
            return reason
        if not all_finite(part):
            return "non_finite"
    for name, avg in m.exp_avg.items():
        sq = m.exp_avg_sq[name].float()
        if bool((sq < 0).any()):
            return "negative_second_moment"
        if bool((avg.float().abs() > sq.sqrt().mul_(bound).add_(_SLACK)).any()):
            return "first_moment_bound"
    return None


def usable_moments(
    spec: ModelSpec, sent: Sequence[Moments | None], bound: float, norm_factor: float
) -> list[Moments]:
    """The moments among ``sent`` (the agreeing responders') that may be combined: each
    passes ``moments_problem`` and their ``v`` scales agree; [] when ``bound`` is 0 (off)."""
    if bound <= 0:
        return []
    ok = [m for m in sent if m is not None and moments_problem(spec, m, bound) is None]
    if not ok:
        return []
    scales = [rms_norm(m.exp_avg_sq) for m in ok]
    return ok if max(scales) <= norm_factor * min(scales) else []
