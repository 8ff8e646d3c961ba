"""The root CLI imports an area only when one of its commands runs (runtime/lazy_cli.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import COMMANDS, app
from swarm_tune.runtime.lazy_cli import LazyTable, load_command
from swarm_tune.sim.cli import SWEEP_COMMANDS

HEAVY = ("torch", "libp2p", "matplotlib", "pandas", "transformers", "trio", "simpy")

# Runs a CLI invocation in a fresh interpreter, then reports which heavy packages it imported.
PROBE = """
import json, sys
from typer.testing import CliRunner
from swarm_tune.runtime.cli import app
res = CliRunner().invoke(app, sys.argv[1:])
heavy = HEAVY_MODULES
print(json.dumps({"code": res.exit_code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
""".replace("HEAVY_MODULES", repr(HEAVY))


def probe(*args: str, cwd: Path | None = None) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=cwd,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_version_imports_no_area() -> None:
    assert probe("version") == {"code": 0, "loaded": []}


def test_sim_run_imports_only_what_simulation_needs(tmp_path: Path) -> None:
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"
    res = probe("sim", "run", str(scenario), "--out", str(tmp_path / "qs"))
    assert res["code"] == 0
    loaded = res["loaded"]
    assert isinstance(loaded, list) and "torch" in loaded
    # pyarrow itself loads pandas when it builds the tables; py-libp2p and matplotlib stay out.
    assert not {"libp2p", "matplotlib"} & set(loaded)
    assert (tmp_path / "qs" / "rounds.parquet").is_file()


@pytest.mark.parametrize("table", [COMMANDS, SWEEP_COMMANDS], ids=["root", "sim"])
def test_every_listed_command_loads_and_its_help_line_is_its_own(table: LazyTable) -> None:
    for name, (module, attribute, help_line) in table.items():
        command = load_command(name, module, attribute)
        own = (command.help or "").strip().splitlines()[0]
        assert help_line == own, f"{name}: table says {help_line!r}, command says {own!r}"
        parent = [] if table is COMMANDS else ["sim"]
        res = CliRunner().invoke(app, [*parent, name, "--help"])
        assert res.exit_code == 0, res.output
        assert "Usage" in res.output


def test_root_and_sim_help_import_no_area() -> None:
    assert probe("--help") == {"code": 0, "loaded": []}
    assert probe("sim", "--help")["code"] == 0


def test_root_help_lists_every_command_and_typos_are_refused() -> None:
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ["version", *COMMANDS]:
        assert f" {name} " in res.output
    res = CliRunner().invoke(app, ["simm"])
    assert res.exit_code == 2


# Every refusal of bad input answers before any heavy area loads (the under-a-second promise
# of issue 18; benchmarks/bench_cli.py prints the times). Paths are made absent by tmp_path.
BAD_INPUTS = {
    "sim-run-missing": ["sim", "run", "{tmp}/nope.yaml"],
    "sim-run-bad-key": ["sim", "run", "{tmp}/bad.yaml"],
    "sim-sweep-bad": ["sim", "sweep", "{tmp}/bad.yaml"],
    "sim-baseline-bad": ["sim", "baseline", "{tmp}/bad.yaml"],
    "sim-regress-bad": ["sim", "regress", "{tmp}/bad.yaml"],
    "sim-init-unknown": ["sim", "init", "no-such-scenario"],
    "report-missing": ["report", "{tmp}/nope"],
    "benchmark-outside": ["benchmark", "/nonexistent-ckpt"],
    "compete-missing": ["compete", "--team-a", "a", "--team-b", "b", "--out", "{tmp}/r.json"],
    "reconstruct-outside": [
        *("checkpoint", "reconstruct", "/nonexistent-ckpt", "--model", "tiny-gpt2"),
        *("--out", "{tmp}/m"),
    ],
    "join-unknown-run": ["join", "--run-id", "no-such-run", "--node-index", "0"],
    "node-missing-env": ["node", "--env-file", "{tmp}/nope.env"],
    "config-bad-option": ["config", "show", "--bogus"],
    "manifest-missing": ["manifest", "check", "{tmp}/nope.json"],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_before_any_heavy_import(case: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("not_a_key: 1\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in BAD_INPUTS[case]]
    res = probe(*args, cwd=tmp_path)
    assert res == {"code": 2, "loaded": []}, res


def test_report_help_states_the_reports_default_target() -> None:
    from swarm_tune.analysis.report import DEFAULT_TARGET_FRACTION

    res = CliRunner().invoke(app, ["report", "--help"])
    text = " ".join(res.output.replace("│", " ").split())  # rich's box wraps the help text
    assert f"(default {DEFAULT_TARGET_FRACTION})" in text, text
