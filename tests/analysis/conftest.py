"""The quickstart run + baseline and their report, built once and shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.sim.baseline import run_baseline
from swarm_tune.sim.runner import run_scenario
from swarm_tune.sim.scenario import load_scenario

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("quickstart")
    scenario = load_scenario(QUICKSTART)
    run_scenario(scenario, root / "run")
    run_baseline(scenario, root / "baseline")
    return root / "run", root / "baseline"


@pytest.fixture(scope="session")
def report_html(runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    run, base = runs
    out = tmp_path_factory.mktemp("report")
    res = CliRunner().invoke(app, ["report", str(run), "--baseline", str(base), "--out", str(out)])
    assert res.exit_code == 0, res.output
    path = Path(res.output.strip().splitlines()[-1])
    assert path == out / "report.html"
    return path.read_text(encoding="utf-8")
