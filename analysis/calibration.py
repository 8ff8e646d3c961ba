"""Sim-to-real calibration: one scenario's figures from both worlds, side by side.

Why a module of its own: the measurement (benchmarks/bench_calibrate.py: the sim, and real
node processes in network namespaces) is slow and needs root, but the comparison it prints —
which figures, the ratio sim/real, whether it is inside the goal — is plain arithmetic that
must be right and testable in milliseconds. Both worlds are reduced to the same ``WorldStats``
here, from the same kind of per-(node, round) rows, so neither world is summarised differently.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GOAL",
    "Row",
    "WorldStats",
    "compare",
    "format_table",
    "plot_report",
    "world_stats",
]

#: The issue's acceptance: sim and real within +-15% of each other.
GOAL = 0.15


@dataclass(frozen=True)
class WorldStats:
    """One world's run: median round time (s), mean bytes sent per node per round, how many
    (node, round) closes had each outcome, every round time (sorted: the distribution), and
    the loss curve (median training loss per round, as a share of round 0's: the two worlds
    train different models, so only the shape of their curves can be set side by side)."""

    median_round_s: float
    bytes_per_node_round: float
    outcomes: Mapping[str, int]
    round_times: tuple[float, ...] = ()
    loss_curve: Mapping[int, float] = field(default_factory=dict)

    def quantile(self, q: float) -> float:
        """The q-quantile of the round times (nearest rank)."""
        t = self.round_times
        return t[min(len(t) - 1, max(0, math.ceil(q * len(t)) - 1))]


@dataclass(frozen=True)
class Row:
    figure: str
    sim: float
    real: float

    @property
    def ratio(self) -> float:
        return self.sim / self.real

    @property
    def within_goal(self) -> bool:
        # Rounded: 0.85 / 1.0 must count as -15%, not as -15.000000000000002%.
        return round(abs(self.ratio - 1.0), 9) <= GOAL


def world_stats(
    durations: Iterable[float],
    bytes_per_round: Iterable[float],
    outcomes: Iterable[str],
    losses: Iterable[tuple[int, float]] = (),
) -> WorldStats:
    """Reduce one world's per-(node, round) figures (``losses``: (round, training loss)
    pairs, non-finite ones ignored); ValueError if there is nothing to judge (no round
    closed, a negative or non-finite figure)."""
    d, b = list(durations), list(bytes_per_round)
    if not d or not b:
        raise ValueError("no closed rounds to compare")
    if any(not math.isfinite(x) or x < 0 for x in (*d, *b)):
        raise ValueError("round times and byte counts must be finite and >= 0")
    by_round: dict[int, list[float]] = {}
    for r, loss in losses:
        if math.isfinite(loss):
            by_round.setdefault(int(r), []).append(loss)
    curve: dict[int, float] = {}
    if by_round and (first := statistics.median(by_round[min(by_round)])) > 0:
        curve = {r: statistics.median(v) / first for r, v in sorted(by_round.items())}
    return WorldStats(
        statistics.median(d), statistics.fmean(b), dict(Counter(outcomes)), tuple(sorted(d)), curve
    )


def compare(sim: WorldStats, real: WorldStats) -> list[Row]:
    """The compared figures; ValueError if the real world's figure is 0 (no ratio exists)."""
    rows = [
        Row("median round time (s)", sim.median_round_s, real.median_round_s),
        Row("bytes sent per node per round", sim.bytes_per_node_round, real.bytes_per_node_round),
    ]
    for row in rows:
        if row.real <= 0:
            raise ValueError(f"{row.figure}: real value {row.real} gives no ratio")
    return rows


def format_table(title: str, rows: Sequence[Row], sim: WorldStats, real: WorldStats) -> str:
    """The side-by-side text: each figure, sim, real, sim/real, and the goal verdict."""
    lines = [
        title,
        f"{'figure':<32} {'sim':>14} {'real':>14} {'sim/real':>9}  goal +-{GOAL:.0%}",
    ]
    for r in rows:
        verdict = "met" if r.within_goal else f"MISSED by {abs(r.ratio - 1.0) - GOAL:+.0%}"
        lines.append(f"{r.figure:<32} {r.sim:>14.4g} {r.real:>14.4g} {r.ratio:>9.3f}  {verdict}")
    lines.append(f"{'round outcomes (node-rounds)':<32} {_outcomes(sim):>14} {_outcomes(real):>14}")
    if sim.round_times and real.round_times:
        for q in (0.1, 0.9):
            a, b = sim.quantile(q), real.quantile(q)
            lines.append(
                f"{f'round time p{q * 100:.0f} (s)':<32} {a:>14.4g} {b:>14.4g} {a / b:>9.3f}"
            )
    rounds = sorted(set(sim.loss_curve) & set(real.loss_curve))
    if rounds:
        lines.append(f"{'loss / round-0 loss, by round':<32} {'sim':>14} {'real':>14}")
        for k in rounds:
            a, b = sim.loss_curve[k], real.loss_curve[k]
            lines.append(f"{f'  round {k}':<32} {a:>14.3f} {b:>14.3f}")
    return "\n".join(lines)


def plot_report(path: Path, title: str, sim: WorldStats, real: WorldStats) -> None:
    """Two panels, both worlds on each: the round-time distribution (empirical CDF) and the
    loss curve relative to round 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, w in (("sim", sim), ("real", real)):
        n = len(w.round_times)
        cdf.step(w.round_times, [(i + 1) / n for i in range(n)], where="post", label=name)
        if w.loss_curve:
            loss.plot(list(w.loss_curve), list(w.loss_curve.values()), marker="o", label=name)
    cdf.set(xlabel="round time (s)", ylabel="share of node-rounds", title="round time")
    loss.set(xlabel="round", ylabel="loss / round-0 loss", title="loss curve")
    for ax in (cdf, loss):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _outcomes(w: WorldStats) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(w.outcomes.items()))
