"""Scenario validation: one clear error per problem, with field path and YAML line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.sim.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(text, "bad.yaml")
    return [(p.path, p.line, p.message) for p in exc.value.problems]


def test_shipped_scenarios_are_valid() -> None:
    names = sorted(p.name for p in SCENARIOS.glob("*.yaml"))
    assert {"quickstart.yaml", "churn-30.yaml", "wan-heterogeneous.yaml", "scale-10k.yaml"} <= set(
        names
    )
    for p in SCENARIOS.glob("*.yaml"):
        s = load_scenario(p)
        assert s.name


def test_field_errors_name_path_and_line() -> None:
    found = problems(
        "name: t\n"
        "nodes:\n"
        "  count: 0\n"
        "churn:\n"
        "  session: {dist: exponential, mean: -1}\n"
        "  bogus: 3\n"
    )
    by_path = {p: (line, msg) for p, line, msg in found}
    assert by_path["nodes.count"][0] == 3
    assert "greater than or equal to 1" in by_path["nodes.count"][1]
    assert by_path["churn.session.mean"][0] == 5
    assert by_path["churn.bogus"][0] == 6
    assert "Extra inputs" in by_path["churn.bogus"][1]
    assert len(found) == 3


def test_impossible_combinations_rejected_before_run() -> None:
    found = problems(
        "name: t\n"
        "nodes: {count: 4}\n"
        "adversaries:\n"
        "  - behaviour: sign_flip\n"
        "    sybil: true\n"
        "    count: 5\n"
        "    group_size: 6\n"
        "protocol:\n"
        "  quorum: 9\n"
        "  min_peers: 7\n"
    )
    paths = {p: line for p, line, _ in found}
    assert paths["adversaries"] == 3
    assert paths["adversaries.0.group_size"] == 7
    assert paths["protocol.quorum"] == 9
    assert paths["protocol.min_peers"] == 10


def test_shared_cores_without_the_cpu_it_shares_is_refused() -> None:
    found = problems(
        "name: t\nnodes: {count: 4}\ncompute:\n  classes:\n    - {name: box, shared_cores: true}\n"
    )
    assert [(p, "shared_cores needs transport_s_per_mb" in m) for p, _, m in found] == [
        ("compute.classes.0", True)
    ], found
    found = problems(
        "name: t\nnodes: {count: 4}\ncompute:\n  classes:\n    - {name: box, shared_cores: true,"
        " transport_s_per_mb: 0.1, cores: 2}\n"
    )
    assert [(p, "cores <= 1" in m) for p, _, m in found] == [("compute.classes.0", True)], found


def test_core_invariants_surface_at_the_protocol_block() -> None:
    found = problems("name: t\nnodes: {count: 3}\nprotocol:\n  heartbeat_interval: 100\n")
    # Reported at the field the core's rule names; the block's line when it is not written.
    assert found[0][0] == "protocol.eviction_timeout" and found[0][1] == 3
    assert "heartbeat_interval=100" in found[0][2]


def test_not_yaml_and_not_a_mapping() -> None:
    assert problems("name: [unclosed\n")[0][2].startswith("not valid YAML")
    assert "mapping" in problems("- 1\n- 2\n")[0][2]


def test_sweep_block_is_accepted() -> None:
    s = parse_scenario("name: t\nnodes: {count: 3}\nsweep: {seed: [1, 2]}\n")
    assert s.sweep == {"seed": [1, 2]}


def test_cli_reports_bad_scenario_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nnodes:\n  count: -2\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["sim", "run", str(bad)])
    assert res.exit_code == 2
    assert "nodes.count" in res.output and ":3:" in res.output
    assert "Traceback" not in res.output
