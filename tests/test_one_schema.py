"""One parameter, one definition: ProtocolConfig's defaults reach scenarios, SWARM_ settings
and run manifests without being written again, and changing one is a one-line change.

The second test proves the last claim the only honest way: it copies the package, edits one
default in runtime/protocol/config.py (one line, nothing else), and reads that parameter
back through the three paths in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swarm_tune.runtime.ops.manifest import RunManifest
from swarm_tune.runtime.ops.protocol_fields import params_markdown
from swarm_tune.runtime.ops.settings import load_settings, protocol_config
from swarm_tune.runtime.protocol.config import DEFAULTS, NAMES, ProtocolConfig
from swarm_tune.sim.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[1]

MINIMAL_MANIFEST: dict[str, Any] = {
    "run_id": "schema-test",
    "created": "2026-12-01",
    "model": {"name": "tiny-gpt2"},
    "dataset": {"name": "data/tinytales-train.txt"},
    "shards": {"num_shards": 2},
    "hyper": {"learning_rate": 0.001, "batch_size": 4, "rounds": 3},
}

# Run in the child: print the three paths' view of every parameter as JSON.
READ_THREE_PATHS = f"""
import json
from swarm_tune.runtime.ops.manifest import RunManifest
from swarm_tune.runtime.ops.settings import load_settings, protocol_config
from swarm_tune.sim.scenario import parse_scenario
from dataclasses import asdict
scenario = parse_scenario("name: t\\nnodes: {{count: 4}}\\n").protocol_config()
settings = protocol_config(load_settings())
manifest = RunManifest.model_validate({MINIMAL_MANIFEST!r})
via_env = protocol_config(load_settings(**manifest.node_env(0)))
print(json.dumps([asdict(c) for c in (scenario, settings, via_env)]))
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.upper().startswith("SWARM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no ./.env
    return tmp_path


def three_paths() -> tuple[ProtocolConfig, ProtocolConfig, ProtocolConfig]:
    scenario = parse_scenario("name: t\nnodes: {count: 4}\n").protocol_config()
    settings = protocol_config(load_settings())
    manifest = RunManifest.model_validate(MINIMAL_MANIFEST)
    via_env = protocol_config(load_settings(**manifest.node_env(0)))
    return scenario, settings, via_env


def test_every_default_reads_the_same_through_scenario_settings_and_manifest(
    clean_env: Path,
) -> None:
    for config in three_paths():
        for name in NAMES:
            assert getattr(config, name) == DEFAULTS[name], name
            assert type(getattr(config, name)) is type(DEFAULTS[name]), name


def test_changing_a_default_is_a_one_line_change(clean_env: Path) -> None:
    pkg = clean_env / "pkg" / "swarm_tune"
    src = ROOT / ".pkg" / "swarm_tune"
    pkg.mkdir(parents=True)
    shutil.copy(src / "__init__.py", pkg / "__init__.py")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "runtime", pkg / "runtime", ignore=ignore)
    (pkg / "sim").symlink_to(ROOT / "sim")
    config = pkg / "runtime" / "protocol" / "config.py"
    text = config.read_text()
    # The one line: min_peers' default, 2 -> 3 (and subnet_cap's, 0.25 -> 0.4).
    edited, n = re.subn(r"(min_peers: int = param\(\s*)2,", r"\g<1>3,", text)
    edited, m = re.subn(r"(subnet_cap: float = param\(\s*)0\.25,", r"\g<1>0.4,", edited)
    assert n == m == 1, "the default is no longer one literal in config.py"
    config.write_text(edited)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SWARM_")}
    env["PYTHONPATH"] = str(pkg.parent)
    out = subprocess.run(
        [sys.executable, "-c", READ_THREE_PATHS],
        capture_output=True,
        text=True,
        env=env,
        cwd=clean_env,
        timeout=120,
        check=True,
    )
    views = json.loads(out.stdout.strip().splitlines()[-1])
    assert [v["min_peers"] for v in views] == [3, 3, 3]
    assert [v["subnet_cap"] for v in views] == [0.4, 0.4, 0.4]


def test_generated_parameter_doc_is_current() -> None:
    committed = (ROOT / "docs" / "protocol-parameters.md").read_text(encoding="utf-8")
    assert committed == params_markdown(), (
        "regenerate: swarm-tune config params --markdown > docs/protocol-parameters.md"
    )
