"""The installed ``swarm-tune`` command: config show, join, manifest (real subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swarm_tune.runtime.ops.peer_id import peer_id_from_seed
from swarm_tune.runtime.ops.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "swarm-tune"
SEED = "ab" * 32
PEER = "/ip4/127.0.0.1/tcp/4001/p2p/" + peer_id_from_seed(bytes.fromhex(SEED))


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("SWARM_")}
    base.update(env or {})
    base["COLUMNS"] = "200"
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "runs", tmp_path / "runs")
    return tmp_path / "runs"


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"SWARM_NODE_KEY_SEED={SEED}\nSWARM_NODE_ID=from-dotenv\n")
    env = {"SWARM_HF_TOKEN": "hf_TopSecretValue", "SWARM_LISTEN_PORT": "4321"}
    table = run(["config", "show"], tmp_path, env)
    assert table.returncode == 0, table.stderr
    assert "SWARM_LISTEN_PORT" in table.stdout and "4321" in table.stdout
    assert "from-dotenv" in table.stdout
    as_json = run(["config", "show", "--json"], tmp_path, env)
    assert as_json.returncode == 0, as_json.stderr
    values = json.loads(as_json.stdout)
    assert values["listen_port"] == 4321 and values["node_id"] == "from-dotenv"
    assert values["hf_token"] == "********" and values["node_key_seed"] == "********"
    for out in (table, as_json):
        assert "hf_TopSecretValue" not in out.stdout + out.stderr
        assert SEED not in out.stdout + out.stderr


def test_config_show_warns_about_typos(tmp_path: Path) -> None:
    result = run(["config", "show", "--json"], tmp_path, {"SWARM_LISTEN_PROT": "1"})
    assert result.returncode == 0
    assert "SWARM_LISTEN_PROT is not a known setting" in result.stderr
    assert json.loads(result.stdout)["listen_port"] == 4001


def test_config_show_bad_config_one_line_per_field(tmp_path: Path) -> None:
    env = {
        "SWARM_LISTEN_PORT": "70000",
        "SWARM_NODE_ID": "no spaces allowed",
        "SWARM_ROUND_TIMEOUT_S": "-5",
        "SWARM_HF_TOKEN": "",
        "SWARM_NODE_KEY_SEED": "not-hex-secret",
    }
    result = run(["config", "show"], tmp_path, env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == [
        "SWARM_LISTEN_PORT",
        "SWARM_NODE_ID",
        "SWARM_NODE_KEY_SEED",
        "SWARM_ROUND_TIMEOUT_S",
    ]
    assert "SWARM_LISTEN_PORT: must be between 0 and 65535 (got 70000)" in lines
    assert "not-hex-secret" not in result.stderr


def test_config_show_cross_field_error_exit_2(tmp_path: Path) -> None:
    env = {"SWARM_NUM_SHARDS": "2", "SWARM_SHARD_INDEX": "2"}
    result = run(["config", "show", "--json"], tmp_path, env)
    assert result.returncode == 2
    assert result.stderr.startswith("SWARM_SHARD_INDEX: must be less than SWARM_NUM_SHARDS=2")


def test_config_peer_id(tmp_path: Path) -> None:
    result = run(["config", "peer-id"], tmp_path, {"SWARM_NODE_KEY_SEED": SEED})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == PEER.rsplit("/", 1)[1]


def test_join_writes_env_that_loads(tmp_path: Path, runs: Path) -> None:
    result = run(["join", "--run-id", "local-tiny", "--node-index", "2"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "swarm-tune node --env-file .env" in result.stdout
    assert "docker run" in result.stdout and "--env-file .env" in result.stdout
    loaded = load_settings(env_file=tmp_path / ".env")
    assert (loaded.run_id, loaded.node_id, loaded.shard_index) == ("local-tiny", "local-tiny-n2", 2)
    again = run(["join", "--run-id", "local-tiny", "--node-index", "2"], tmp_path)
    assert again.returncode == 0 and "unchanged" in again.stdout
    other = run(["join", "--run-id", "local-tiny", "--node-index", "3"], tmp_path)
    assert other.returncode == 2 and "--force" in other.stderr
    assert load_settings(env_file=tmp_path / ".env").shard_index == 2  # untouched
    forced = run(["join", "--run-id", "local-tiny", "--node-index", "3", "--force"], tmp_path)
    assert forced.returncode == 0
    assert load_settings(env_file=tmp_path / ".env").shard_index == 3


def test_join_unknown_run_and_bad_device(tmp_path: Path, runs: Path) -> None:
    unknown = run(["join", "--run-id", "nope", "--node-index", "0"], tmp_path)
    assert unknown.returncode == 2 and "local-tiny" in unknown.stderr
    device = run(
        ["join", "--run-id", "local-tiny", "--node-index", "0", "--device", "tpu"], tmp_path
    )
    assert device.returncode == 2 and device.stderr.startswith("SWARM_DEVICE:")
    assert not (tmp_path / ".env").exists()


def test_manifest_commands(tmp_path: Path, runs: Path) -> None:
    ok = run(["manifest", "validate"], tmp_path)
    assert ok.returncode == 0 and ok.stdout.count("ok ") == len(list(runs.glob("*.json")))
    setb = run(["manifest", "set-bootstrap", PEER], tmp_path)
    assert setb.returncode == 0, setb.stderr
    assert all(PEER in p.read_text() for p in runs.glob("*.json"))
    again = run(["manifest", "set-bootstrap", PEER], tmp_path)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    (runs / "zz-broken.json").write_text('{"run_id": "broken", "created": "yesterday"}')
    bad = run(["manifest", "validate"], tmp_path)
    assert bad.returncode == 2
    assert "zz-broken.json: created:" in bad.stderr and "zz-broken.json: model:" in bad.stderr
    before = {p: p.read_bytes() for p in runs.iterdir()}
    refused = run(["manifest", "set-bootstrap", PEER.replace("4001", "4002")], tmp_path)
    assert refused.returncode == 2 and "nothing was changed" in refused.stderr
    assert {p: p.read_bytes() for p in runs.iterdir()} == before
