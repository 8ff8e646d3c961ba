"""DiLoCo: H inner optimizer steps per round, then an outer Nesterov step on the swarm's average.

Why: over home links the cost is bytes per round, not FLOPs. A node that takes H real local
steps (inner AdamW, its own moments) and then exchanges the *pseudo-gradient*
``theta_round_start - theta_after_H`` ships one update per H steps; the swarm averages the
pseudo-gradients (with the run's aggregation rule, like any gradient) and every node applies
the same outer SGD step with Nesterov momentum from the round's start parameters (Douillard
et al. 2023, defaults lr 0.7, momentum 0.9).

Why the learner owns it (training config, not ``ProtocolConfig``): the core never looks
inside an update; it averages whatever a ``"grad"`` round produces. H, the outer lr and the
momentum change only what a learner computes and applies, exactly like ``lr`` and
``optimizer`` today, so they live beside them (``LearnerConfig`` / the scenario's
``learning:`` block). What the core does see is time: a round now spans H steps, so
``round_timeout`` must cover H steps (the sim's compute model charges H steps per round).

Replicas stay identical: the outer momentum buffer is a function of the sequence of averages
applied (the same for every node that accepted the same contributions), and every node steps
from the same start parameters. Inner state (AdamW moments) is per node by design.

H = 1 with the outer step ``lr 1, momentum 0`` and an inner plain SGD of lr eta is the
per-step path: ``theta - 1 * mean(eta * g_i) == theta - eta * mean(g_i)`` (up to float32
rounding of the subtraction that forms the pseudo-gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the scenario schema imports the config, not torch
    import torch

__all__ = ["DiLoCoConfig", "outer_delta"]

MAX_INNER_STEPS = 100_000


@dataclass(frozen=True, slots=True)
class DiLoCoConfig:
    """H inner steps per round; outer SGD (Nesterov when momentum > 0)."""

    inner_steps: int = 1
    outer_lr: float = 0.7
    outer_momentum: float = 0.9

    def __post_init__(self) -> None:
        if isinstance(self.inner_steps, bool) or not 1 <= self.inner_steps <= MAX_INNER_STEPS:
            raise ValueError(f"inner_steps (H) must be in [1, {MAX_INNER_STEPS}]")
        if not (math.isfinite(self.outer_lr) and 0.0 < self.outer_lr <= 10.0):
            raise ValueError("outer_lr must be in (0, 10]")
        if not 0.0 <= self.outer_momentum < 1.0:
            raise ValueError("outer_momentum must be in [0, 1)")


def outer_delta(cfg: DiLoCoConfig, grad: torch.Tensor, buf: torch.Tensor | None) -> torch.Tensor:
    """What to subtract from the parameters for pseudo-gradient ``grad`` (any shape, rows ok).

    ``buf`` is the momentum buffer (updated in place: ``b = mu * b + g``); Nesterov's step is
    ``lr * (g + mu * b)``, torch.optim.SGD(nesterov=True)'s rule, so both learners agree."""
    if cfg.outer_momentum == 0.0 or buf is None:
        return grad * cfg.outer_lr if cfg.outer_lr != 1.0 else grad
    buf.mul_(cfg.outer_momentum).add_(grad)
    return grad.add(buf, alpha=cfg.outer_momentum).mul_(cfg.outer_lr)
