"""Run manifests: shipped files validate, join writes loadable .env, set-bootstrap is safe."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from swarm_tune.runtime.ops.join import JoinError, plan_join, start_commands, write_env_file
from swarm_tune.runtime.ops.manifest import (
    ManifestError,
    dump_manifest,
    find_manifest,
    load_manifest,
    load_manifests,
    set_bootstrap_peers,
)
from swarm_tune.runtime.ops.peer_id import peer_id_from_seed
from swarm_tune.runtime.ops.settings import NodeSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "runs"
PEER_A = "/ip4/203.0.113.7/tcp/4001/p2p/" + peer_id_from_seed(bytes(range(32)))
PEER_B = "/dns4/boot.example.org/tcp/4002/p2p/" + peer_id_from_seed(bytes(32 * [7]))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.upper().startswith("SWARM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    target = tmp_path / "runs"
    shutil.copytree(SHIPPED, target)
    return target


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_shipped_manifests_are_valid_and_canonical() -> None:
    good, bad = load_manifests(SHIPPED)
    assert bad == []
    names = {p.name for p in good}
    assert {"gpt2-data-parallel.json", "competition-2v2.json", "local-tiny.json"} <= names
    for path in good:
        # Stored in the canonical form, so set-bootstrap rewrites only what it changes.
        assert path.read_text() == dump_manifest(json.loads(path.read_text()))
    gpt2 = load_manifest(SHIPPED / "gpt2-data-parallel.json")
    assert gpt2.shards.num_shards == 8 and "gpt2" in gpt2.model.name
    comp = load_manifest(SHIPPED / "competition-2v2.json")
    assert comp.competition is not None
    assert sorted(len(m) for m in comp.competition.teams.values()) == [2, 2]
    tiny = load_manifest(SHIPPED / "local-tiny.json")
    assert tiny.model.name == "tiny-gpt2" and tiny.dataset.name.startswith("data/")
    assert (REPO / tiny.dataset.name).exists()  # the offline demo really is offline


@pytest.mark.parametrize("run_id", ["gpt2-data-parallel", "competition-2v2", "local-tiny"])
def test_every_participant_env_loads_back(runs: Path, tmp_path: Path, run_id: str) -> None:
    path, manifest = find_manifest(runs, run_id)
    shards_per_run: dict[str, set[int]] = {}
    for index in range(manifest.node_count):
        plan = plan_join(manifest, path, index, device="cuda:0")
        out = tmp_path / f"node{index}.env"
        assert write_env_file(out, plan.text) == "written"
        assert oct(out.stat().st_mode & 0o777) == "0o600"
        loaded = load_settings(env_file=out)
        assert loaded == plan.settings
        assert loaded.device == "cuda:0"
        assert loaded.learning_rate == manifest.hyper.learning_rate
        assert loaded.max_rounds == manifest.hyper.rounds
        assert loaded.diloco_inner_steps == manifest.hyper.diloco_inner_steps
        assert loaded.outer_lr == manifest.hyper.outer_lr
        assert loaded.num_shards == manifest.shards.num_shards
        assert loaded.bootstrap_peers == manifest.bootstrap_peers
        shards_per_run.setdefault(loaded.run_id, set()).add(loaded.shard_index)
    # Within each (team) swarm every node has its own shard.
    for shards in shards_per_run.values():
        assert len(shards) == len(set(shards))
    if manifest.competition is not None:
        assert len(shards_per_run) == len(manifest.competition.teams)


def test_join_refuses_bad_index_and_keeps_different_env(runs: Path, tmp_path: Path) -> None:
    path, manifest = find_manifest(runs, "local-tiny")
    with pytest.raises(JoinError, match=r"between 0 and 3 .*got 4"):
        plan_join(manifest, path, 4)
    out = tmp_path / ".env"
    out.write_text("SWARM_NODE_ID=hand-edited\n")
    plan = plan_join(manifest, path, 1)
    with pytest.raises(JoinError, match="--force"):
        write_env_file(out, plan.text)
    assert out.read_text() == "SWARM_NODE_ID=hand-edited\n"
    assert write_env_file(out, plan.text, force=True) == "written"
    assert write_env_file(out, plan.text) == "same"


def test_start_commands_use_env_file_and_ports(runs: Path) -> None:
    path, manifest = find_manifest(runs, "local-tiny")
    plan = plan_join(manifest, path, 2, listen_port=4101, metrics_port=9201)
    native, sourced, docker = start_commands(Path("my.env"), plan.env)
    assert native == "swarm-tune node --env-file my.env"
    assert sourced.startswith("set -a; . ./my.env; set +a;")
    assert "--env-file my.env" in docker and "-p 4101:4101" in docker
    assert "-p 9201:9201" in docker and "/swarm/data:ro" in docker


def test_set_bootstrap_is_idempotent_and_only_touches_the_list(runs: Path) -> None:
    before = {p.name: json.loads(p.read_text()) for p in runs.glob("*.json")}
    changed = set_bootstrap_peers(runs, [PEER_A, PEER_B])
    assert sorted(p.name for p in changed) == sorted(before)
    first = snapshot(runs)
    for name, data in before.items():
        after = json.loads((runs / name).read_text())
        assert list(after) == list(data)  # key order kept
        assert after.pop("bootstrap_peers") == [PEER_A, PEER_B]
        data.pop("bootstrap_peers")
        assert after == data
    assert set_bootstrap_peers(runs, [PEER_A, PEER_B]) == []
    assert snapshot(runs) == first  # not even rewritten
    assert not [p for p in runs.iterdir() if p.name.endswith(".tmp")]


def test_set_bootstrap_rejects_bad_multiaddr_without_touching(runs: Path) -> None:
    before = snapshot(runs)
    with pytest.raises(ManifestError, match="IPv4"):
        set_bootstrap_peers(runs, ["/ip4/999.1.1.1/tcp/4001/p2p/" + "1" * 46])
    assert snapshot(runs) == before


def test_broken_manifest_touches_nothing(runs: Path) -> None:
    broken = runs / "broken.json"
    broken.write_text('{"run_id": "x", "hyper": {"learning_rate": -1}')  # truncated JSON
    before = snapshot(runs)
    with pytest.raises(ManifestError) as info:
        set_bootstrap_peers(runs, [PEER_A])
    assert "broken.json" in str(info.value) and "invalid JSON at line 1" in str(info.value)
    assert snapshot(runs) == before


def test_invalid_manifest_reports_each_field(tmp_path: Path) -> None:
    data = json.loads((SHIPPED / "local-tiny.json").read_text())
    data["hyper"]["learning_rate"] = -1
    data["shards"]["num_shards"] = 0
    data["bootstrap_peers"] = ["/ip4/1.2.3.4/tcp/4001"]
    data["modle"] = {}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    text = str(info.value)
    for where in ("hyper.learning_rate", "shards.num_shards", "bootstrap_peers", "modle"):
        assert f"bad.json: {where}" in text
    assert "unknown field" in text


def test_node_rules_are_enforced_on_manifests(tmp_path: Path) -> None:
    data = json.loads((SHIPPED / "local-tiny.json").read_text())
    data["hyper"]["quorum"] = 1
    data["hyper"]["min_peers"] = 3
    path = tmp_path / "q.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="hyper: quorum: a peer count below min_peers=3"):
        load_manifest(path)


def test_teams_must_cover_indices(tmp_path: Path) -> None:
    data = json.loads((SHIPPED / "competition-2v2.json").read_text())
    data["competition"]["teams"] = {"red": [0, 1], "blue": [1, 2]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="two teams"):
        load_manifest(path)


def test_settings_field_names_cover_manifest_env(runs: Path) -> None:
    _, manifest = find_manifest(runs, "gpt2-data-parallel")
    assert set(manifest.node_env(0)) <= set(NodeSettings.model_fields)


def test_readers_fall_back_to_the_shipped_manifests_where_there_is_no_runs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installed wheel run from any folder: join and validate read the packaged runs/.
    from typer.testing import CliRunner

    from swarm_tune.runtime.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["manifest", "validate"])
    assert res.exit_code == 0 and "(local-tiny, 4 nodes)" in res.output, res.output
    res = CliRunner().invoke(app, ["join", "--run-id", "local-tiny", "--node-index", "1"])
    assert res.exit_code == 0, res.output
    assert "SWARM_RUN_ID=local-tiny" in (tmp_path / ".env").read_text()
