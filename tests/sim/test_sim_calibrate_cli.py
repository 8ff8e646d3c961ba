"""``swarm-tune sim calibrate``: what it refuses, in one line with exit code 2, before it
builds anything (the full run needs root and minutes: benchmarks/bench_calibrate.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "calibrate-6.yaml"


def _refused(res: object) -> str:
    out = str(getattr(res, "output", ""))
    assert getattr(res, "exit_code", None) == 2, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return lines[0]


def test_missing_tools_are_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("as a user the root check answers first (the next test)")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ip, tc or nft on it
    line = _refused(CliRunner().invoke(app, ["sim", "calibrate", str(SCENARIO)]))
    assert "calibrate-6.yaml" in line and "needs ip, tc, nft" in line


def test_without_root_it_is_refused_in_one_line() -> None:
    cmd = [sys.executable, "-m", "swarm_tune.runtime.cli", "sim", "calibrate", str(SCENARIO)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv: cannot drop to a user")
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and "needs root" in lines[0], lines


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--profile", "lan4"], "--profile 'lan4'"),
        (["--profile", "all"], None),  # a good profile: reaches the twin check below
    ],
)
def test_a_scenario_the_twin_cannot_build_or_a_bad_profile(
    tmp_path: Path, args: list[str], expect: str | None
) -> None:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "tc", "nft")):
        pytest.skip("the root and tools checks answer first")
    bad = tmp_path / "regions.yaml"
    text = SCENARIO.read_text().replace("kind: full", "kind: regions\n  regions: [{name: eu}]")
    bad.write_text(text.replace("  latency_ms: 25\n", "  region_latency_ms: [[25]]\n"))
    line = _refused(CliRunner().invoke(app, ["sim", "calibrate", str(bad), *args]))
    assert (expect or "topology kind 'full'") in line
