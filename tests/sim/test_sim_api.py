"""``swarm_tune.sim.run``: the notebook entry point, held to the CLI's gate and the README.

Why the README block is executed as it stands: a documented example that no test runs rots
silently; this one is extracted from README.md and run in a fresh interpreter.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from swarm_tune import sim
from swarm_tune.sim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README.md: no python block under 'Python API'"
    return match.group(1)


def test_readme_example_runs_and_is_ten_lines(tmp_path: Path) -> None:
    code = _readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "every node is an adversary" in res.stdout
    assert (tmp_path / "runs_out" / "api-small" / "report.html").is_file()
    assert (tmp_path / "runs_out" / "api-quick" / "manifest.json").is_file()


def _tiny() -> dict[str, object]:
    data = load_scenario(REPO / "scenarios" / "quickstart.yaml").model_dump(mode="json")
    return {**data, "nodes": {"count": 3}, "adversaries": [], "rounds": {"target": 3}}


def test_same_seed_same_tables_and_every_form_of_input(tmp_path: Path) -> None:
    a = sim.run(_tiny(), seed=5, out=tmp_path / "a")
    scenario = sim.Scenario.model_validate(_tiny())
    b = sim.run(scenario, seed=5, out=tmp_path / "b")
    assert a.manifest["seed"] == b.manifest["seed"] == 5
    for name, frame in a.tables().items():
        # wall_s is the host's clock, the one column a seed does not fix.
        assert frame.drop(columns="wall_s", errors="ignore").equals(
            b.tables()[name].drop(columns="wall_s", errors="ignore")
        ), name
    assert len(a.swarm) > 0 and {"round", "eval_loss_mean_model"} <= set(a.swarm.columns)
    assert a.report().name == "report.html" and a.report().parent == tmp_path / "a"


def test_bad_input_is_refused_like_the_cli(tmp_path: Path) -> None:
    with pytest.raises(sim.ScenarioError, match=r"<dict>: not_a_key: "):
        sim.run({**_tiny(), "not_a_key": 1}, out=tmp_path / "x")
    # A Scenario object skipped the YAML parser, not the feasibility check.
    infeasible = sim.Scenario.model_validate({**_tiny(), "protocol": {"min_peers": 9}})
    with pytest.raises(sim.ScenarioError, match="min_peers 9 > 3 nodes"):
        sim.run(infeasible, out=tmp_path / "y")
    with pytest.raises(sim.ScenarioError, match="cannot read"):
        sim.run(tmp_path / "nope.yaml")
    with pytest.raises(TypeError, match="seed"):
        sim.run(_tiny(), seed="1", out=tmp_path / "z")  # type: ignore[arg-type]
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z"))
