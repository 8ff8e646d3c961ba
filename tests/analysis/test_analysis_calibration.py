"""The calibration comparison (analysis/calibration.py): ratios, the +-15% verdict, bad input.

The measurement itself (``swarm-tune sim calibrate``, benchmarks/bench_calibrate.py) needs
root and a minute of six real nodes; what it prints is decided here, so this is where it is
held to account.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_tune.analysis.calibration import compare, format_table, plot_report, world_stats


def test_ratios_and_verdicts_follow_the_figures() -> None:
    sim = world_stats([1.0, 1.1, 5.0], [100.0, 300.0], ["average", "average", "fallback"])
    real = world_stats([1.2, 1.0, 0.9, 9.0], [100.0, 100.0], ["average"] * 4)
    assert sim.median_round_s == 1.1 and real.median_round_s == 1.1
    assert sim.outcomes == {"average": 2, "fallback": 1}
    rows = compare(sim, real)
    assert [round(r.ratio, 3) for r in rows] == [1.0, 2.0]
    assert [r.within_goal for r in rows] == [True, False]
    text = format_table("t", rows, sim, real)
    assert "met" in text and "MISSED by +85%" in text and "fallback:1" in text


def test_the_goal_edge_is_inclusive() -> None:
    real = world_stats([1.0], [100.0], ["average"])
    assert all(r.within_goal for r in compare(world_stats([1.15], [85.0], [""]), real))
    assert not any(r.within_goal for r in compare(world_stats([1.16], [84.0], [""]), real))


@pytest.mark.parametrize(
    ("durations", "sent"),
    [([], [1.0]), ([1.0], []), ([float("nan")], [1.0]), ([1.0], [-1.0])],
)
def test_nothing_to_judge_is_refused(durations: list[float], sent: list[float]) -> None:
    with pytest.raises(ValueError):
        world_stats(durations, sent, [])


def test_a_zero_real_figure_gives_no_ratio() -> None:
    sim = world_stats([1.0], [1.0], [])
    with pytest.raises(ValueError, match="no ratio"):
        compare(sim, world_stats([0.0], [1.0], []))


def test_distribution_and_loss_curve_are_set_side_by_side(tmp_path: Path) -> None:
    sim = world_stats(
        [float(x) for x in range(1, 11)], [1.0], ["average"] * 10, [(0, 4.0), (0, 6.0), (1, 2.5)]
    )
    real = world_stats(
        [2.0] * 10, [1.0], ["average"] * 10, [(0, 10.0), (1, 8.0), (1, float("nan"))]
    )
    assert sim.quantile(0.1) == 1.0 and sim.quantile(0.9) == 9.0
    assert sim.loss_curve == {0: 1.0, 1: 0.5} and real.loss_curve == {0: 1.0, 1: 0.8}
    text = format_table("t", compare(sim, real), sim, real)
    assert "round time p90 (s)" in text and "4.5" in text  # 9 / 2
    assert "round 1" in text and "0.500" in text and "0.800" in text
    plot_report(tmp_path / "c.png", "t", sim, real)
    assert (tmp_path / "c.png").stat().st_size > 1000
