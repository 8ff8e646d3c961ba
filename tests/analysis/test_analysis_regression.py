"""The CI regression of convergence under churn, and proof that it can fail.

The passing run is the committed scenario exactly as CI checks it (50 nodes, 30% churn, 10%
stragglers, one adversary). The failing run breaks averaging on purpose: ``min_peers`` 50 is
above the live node count under churn (and the adversary is banned), so every round falls
back to the node's own update and nodes overfit their 64-sample shards.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm_tune.analysis.report import plot_data
from swarm_tune.runtime.cli import app
from swarm_tune.sim.baseline_regress import Tolerances, run_regression
from swarm_tune.sim.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "regression-churn.yaml"


@pytest.mark.slow
def test_regression_churn_passes(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["sim", "regress", str(SCENARIO), "--out", str(tmp_path)])
    print(res.output)  # the figures, visible with -s / in CI logs on failure
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "tokens-to-target" in res.output
    report = tmp_path / "report.html"
    assert f"report: {report}" in res.output.replace("\n", "")
    assert len(plot_data(report.read_text(encoding="utf-8"))) >= 5


def test_regression_fails_when_averaging_is_broken(tmp_path: Path) -> None:
    s = load_scenario(SCENARIO)
    broken = s.model_copy(
        update={
            "protocol": s.protocol.model_copy(update={"min_peers": s.nodes.count}),
            "rounds": s.rounds.model_copy(update={"target": 8}),
        }
    )
    result = run_regression(broken, tmp_path, Tolerances())
    print(result.failures)
    assert not result.passed
    assert any("tokens-to-target" in f for f in result.failures)
    assert result.comparison.tokens_ratio > Tolerances().max_tokens_ratio
    assert math.isfinite(result.comparison.baseline_tokens)
    # The report is left where the message says, and says FAIL.
    assert result.report == tmp_path / "report.html"
    assert "FAIL" in result.report.read_text(encoding="utf-8")
