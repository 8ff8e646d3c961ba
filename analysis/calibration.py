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
from dataclasses import dataclass

__all__ = ["GOAL", "Row", "WorldStats", "compare", "format_table", "world_stats"]

#: The issue's acceptance: sim and real within +-15% of each other.
GOAL = 0.15


@dataclass(frozen=True)
class WorldStats:
    """One world's run: median round time (s), mean bytes sent per node per round, and how
    many (node, round) closes had each outcome."""

    median_round_s: float
    bytes_per_node_round: float
    outcomes: Mapping[str, int]


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
    durations: Iterable[float], bytes_per_round: Iterable[float], outcomes: Iterable[str]
) -> WorldStats:
    """Reduce one world's per-(node, round) figures; ValueError if there is nothing to judge
    (no round closed, a negative or non-finite figure)."""
    d, b = list(durations), list(bytes_per_round)
    if not d or not b:
        raise ValueError("no closed rounds to compare")
    if any(not math.isfinite(x) or x < 0 for x in (*d, *b)):
        raise ValueError("round times and byte counts must be finite and >= 0")
    return WorldStats(statistics.median(d), statistics.fmean(b), dict(Counter(outcomes)))


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
    return "\n".join(lines)


def _outcomes(w: WorldStats) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(w.outcomes.items()))
