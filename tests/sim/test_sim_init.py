"""``swarm-tune sim init``: the scenarios shipped inside the package, written where a user is.

Why: an installed wheel has no scenarios/ folder beside it; the package carries them
(runtime/resources.py) and ``sim init NAME`` copies one out to run and edit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.runtime.resources import shipped_scenario, shipped_scenarios
from swarm_tune.sim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]


def test_every_scenario_in_the_checkout_is_shipped_and_valid() -> None:
    shipped = shipped_scenarios()
    assert sorted(shipped) == sorted(p.stem for p in (REPO / "scenarios").glob("*.yaml"))
    for path in shipped.values():
        load_scenario(path)  # schema and feasibility


def test_init_writes_lists_and_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    listed = runner.invoke(app, ["sim", "init"])
    assert listed.exit_code == 0 and "quickstart: 5 honest nodes" in listed.output

    res = runner.invoke(app, ["sim", "init", "quickstart"])
    assert res.exit_code == 0, res.output
    written = tmp_path / "quickstart.yaml"
    assert written.read_bytes() == shipped_scenario("quickstart").read_bytes()
    assert runner.invoke(app, ["sim", "init", "quickstart.yaml"]).exit_code == 0  # same: ok

    written.write_text("name: mine\n")
    res = runner.invoke(app, ["sim", "init", "quickstart"])
    assert res.exit_code == 2 and "--force" in res.output
    assert written.read_text() == "name: mine\n"  # nothing written
    assert runner.invoke(app, ["sim", "init", "quickstart", "--force"]).exit_code == 0
    assert written.read_bytes() == shipped_scenario("quickstart").read_bytes()

    res = runner.invoke(app, ["sim", "init", "quikstart", "--out", "x.yaml"])
    assert res.exit_code == 2 and "there are: " in res.output and "quickstart" in res.output
    assert not (tmp_path / "x.yaml").exists()
