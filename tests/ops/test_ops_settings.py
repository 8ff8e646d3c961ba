"""NodeSettings: every rule names its SWARM_* variable; env and .env input both work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.ops.peer_id import peer_id_from_seed
from swarm_tune.runtime.ops.settings import NodeSettings, SettingsError, load_settings

SEED = "11" * 32
PEER = "/ip4/127.0.0.1/tcp/4001/p2p/" + peer_id_from_seed(bytes.fromhex(SEED))
CIRCUIT = f"{PEER}/p2p-circuit/p2p/{peer_id_from_seed(bytes.fromhex(SEED))}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings read SWARM_* and ./.env: start every test from neither.
    for key in list(os.environ):
        if key.upper().startswith("SWARM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def errors_for(**overrides: Any) -> dict[str, str]:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.problems)
    return dict(line.split(": ", 1) for line in lines)


def test_defaults_are_valid() -> None:
    s = load_settings()
    assert s.listen_port == 4001
    assert s.round_timeout_s == 30
    assert s.eviction_timeout_s == 60
    assert (s.ipv4_prefix, s.ipv6_prefix) == (24, 48)
    assert s.quorum == 1.0 and s.bootstrap_peers == []


@pytest.mark.parametrize(
    ("field", "value", "env", "expect"),
    [
        ("listen_port", 70000, "SWARM_LISTEN_PORT", "must be between 0 and 65535 (got 70000)"),
        ("listen_port", -1, "SWARM_LISTEN_PORT", "between 0 and 65535"),
        ("metrics_port", 65536, "SWARM_METRICS_PORT", "between 0 and 65535"),
        ("round_timeout_s", -3, "SWARM_ROUND_TIMEOUT_S", "greater than 0 (got -3)"),
        ("round_timeout_s", 0, "SWARM_ROUND_TIMEOUT_S", "greater than 0"),
        ("learning_rate", 0.0, "SWARM_LEARNING_RATE", "greater than 0"),
        ("learning_rate", "nan", "SWARM_LEARNING_RATE", "greater than 0"),
        ("node_id", "bad id!", "SWARM_NODE_ID", "letters, digits"),
        ("node_id", "x" * 65, "SWARM_NODE_ID", "1-64 characters"),
        ("run_id", "", "SWARM_RUN_ID", "1-64 characters"),
        ("listen_host", "localhost", "SWARM_LISTEN_HOST", "IP address"),
        ("bootstrap_peers", "/ip4/1.2.3.4/tcp/4001", "SWARM_BOOTSTRAP_PEERS", "incomplete"),
        ("bootstrap_peers", "/ip4/1.2.3/tcp/1/p2p/Qm", "SWARM_BOOTSTRAP_PEERS", "IPv4"),
        ("bootstrap_peers", PEER + ",/udp/1", "SWARM_BOOTSTRAP_PEERS", "entry 2"),
        ("bootstrap_peers", PEER.replace("4001", "0"), "SWARM_BOOTSTRAP_PEERS", "port"),
        ("checkpoint_dir", "/etc/swarm", "SWARM_CHECKPOINT_DIR", "system directory /etc"),
        ("checkpoint_dir", "/", "SWARM_CHECKPOINT_DIR", "directly into /"),
        ("checkpoint_dir", "/usr/lib/x", "SWARM_CHECKPOINT_DIR", "system directory /usr"),
        ("checkpoint_dir", "/proc/self", "SWARM_CHECKPOINT_DIR", "system directory"),
        ("checkpoint_dir", "/var/lib/swarm", "SWARM_CHECKPOINT_DIR", "system directory /var/lib"),
        ("checkpoint_dir", "/tmp/../etc", "SWARM_CHECKPOINT_DIR", "system directory /etc"),
        ("device", "gpu", "SWARM_DEVICE", "cpu, cuda"),
        ("device", "cuda:x", "SWARM_DEVICE", "cuda:N"),
        ("quorum", 0, "SWARM_QUORUM", "at least 1"),
        ("quorum", 1.5, "SWARM_QUORUM", "a fraction in (0, 1] (got 1.5)"),
        ("quorum", "half", "SWARM_QUORUM", "peer count"),
        ("subnet_cap", 0, "SWARM_SUBNET_CAP", "(0, 1]"),
        ("ipv4_prefix", 33, "SWARM_IPV4_PREFIX", "between 8 and 32"),
        ("ipv6_prefix", 8, "SWARM_IPV6_PREFIX", "between 16 and 128"),
        ("min_peers", 0, "SWARM_MIN_PEERS", "at least 1"),
        ("num_shards", 0, "SWARM_NUM_SHARDS", "at least 1"),
        ("aggregation", "ring", "SWARM_AGGREGATION", "'flat', 'gossip' or 'group'"),
        ("log_format", "xml", "SWARM_LOG_FORMAT", "'json', 'console' or 'auto'"),
        ("log_level", "loud", "SWARM_LOG_LEVEL", "DEBUG"),
        ("model_name", "not a model!", "SWARM_MODEL_NAME", "built-in"),
        ("model_overrides", "n_layer", "SWARM_MODEL_OVERRIDES", "key=value"),
        ("batch_size", "many", "SWARM_BATCH_SIZE", "whole number (got many)"),
        ("relay_mode", "perhaps", "SWARM_RELAY_MODE", "true or false"),
        ("enable_dcutr", "perhaps", "SWARM_ENABLE_DCUTR", "true or false"),
        ("relay_addrs", "/ip4/1.2.3.4/tcp/1", "SWARM_RELAY_ADDRS", "entry 1: incomplete"),
        ("relay_addrs", CIRCUIT, "SWARM_RELAY_ADDRS", "directly"),
        ("max_stranger_transfers", "few", "SWARM_MAX_STRANGER_TRANSFERS", "whole number"),
        ("conn_rate_per_ip", "fast", "SWARM_CONN_RATE_PER_IP", "number"),
        ("max_conns_per_ip", "1.5", "SWARM_MAX_CONNS_PER_IP", "whole number"),
        ("node_key_seed", "abc", "SWARM_NODE_KEY_SEED", "64 hex digits"),
    ],
)
def test_each_rule_names_its_variable(field: str, value: object, env: str, expect: str) -> None:
    problems = errors_for(**{field: value})
    assert list(problems) == [env]
    assert expect in problems[env]


@pytest.mark.parametrize(
    ("overrides", "env", "expect"),
    [
        ({"num_shards": 4, "shard_index": 4}, "SWARM_SHARD_INDEX", "less than SWARM_NUM_SHARDS=4"),
        (
            {"heartbeat_interval_s": 10, "eviction_timeout_s": 10},
            "SWARM_EVICTION_TIMEOUT_S",
            "greater than SWARM_HEARTBEAT_INTERVAL_S=10",
        ),
        ({"min_peers": 3, "quorum": "2"}, "SWARM_QUORUM", "SWARM_MIN_PEERS=3"),
        ({"metrics_port": 5000, "listen_port": 5000}, "SWARM_METRICS_PORT", "differ"),
        (
            {"node_key_seed": SEED, "node_key_file": "k.key"},
            "SWARM_NODE_KEY_FILE",
            "not both",
        ),
    ],
)
def test_cross_field_rules(overrides: dict[str, object], env: str, expect: str) -> None:
    problems = errors_for(**overrides)
    assert list(problems) == [env]
    assert expect in problems[env]


def test_two_cross_field_errors_give_two_lines() -> None:
    problems = errors_for(num_shards=2, shard_index=5, heartbeat_interval_s=9, eviction_timeout_s=3)
    assert set(problems) == {"SWARM_SHARD_INDEX", "SWARM_EVICTION_TIMEOUT_S"}


def test_several_bad_fields_one_line_each() -> None:
    problems = errors_for(listen_port=70000, node_id="a b", device="tpu", round_timeout_s=-1)
    assert set(problems) == {
        "SWARM_LISTEN_PORT",
        "SWARM_NODE_ID",
        "SWARM_DEVICE",
        "SWARM_ROUND_TIMEOUT_S",
    }


def test_secret_values_never_appear_in_errors_or_display() -> None:
    secret = "zz-super-secret-zz"
    with pytest.raises(SettingsError) as info:
        load_settings(node_key_seed=secret)
    assert secret not in str(info.value)
    s = load_settings(node_key_seed=SEED, hf_token="hf_abcdefghijkl")
    shown = repr(s.masked_dict()) + "\n".join(s.env_lines()) + repr(s)
    assert SEED not in shown and "hf_abcdefghijkl" not in shown
    assert s.masked_dict()["hf_token"] == "********"
    assert s.node_key_seed is not None and s.node_key_seed.get_secret_value() == SEED


def test_quorum_text_count_vs_fraction() -> None:
    assert load_settings(quorum="3", min_peers=2).quorum == 3
    assert isinstance(load_settings(quorum="3").quorum, int)
    fraction = load_settings(quorum="1.0").quorum
    assert isinstance(fraction, float) and fraction == 1.0
    assert load_settings(quorum="0.5").quorum == 0.5


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_LISTEN_PORT", "4100")
    monkeypatch.setenv("SWARM_BOOTSTRAP_PEERS", f" {PEER} , {PEER.replace('4001', '4002')} ")
    monkeypatch.setenv("SWARM_RELAY_MODE", "true")
    monkeypatch.setenv("SWARM_MODEL_OVERRIDES", "n_layer=2,n_embd=64,tie=false,act=gelu")
    s = load_settings()
    assert s.listen_port == 4100
    assert s.relay_mode is True
    assert s.bootstrap_peers == [PEER, PEER.replace("4001", "4002")]
    assert s.model_overrides == {"n_layer": 2, "n_embd": 64, "tie": False, "act": "gelu"}


def test_nat_traversal_settings_reach_the_network_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from swarm_tune.runtime.net.config import NetConfig
    from swarm_tune.runtime.net.node_main import build_net_config

    default = build_net_config(load_settings())
    # Every node can dial a peer's relayed address; DCUtR and relay slots are opt-in.
    assert default.enable_relay and not default.relay_hop and not default.enable_dcutr
    assert default.max_stranger_transfers == NetConfig().max_stranger_transfers  # one default
    monkeypatch.setenv("SWARM_RELAY_ADDRS", f"{PEER}, {PEER.replace('4001', '4002')}")
    monkeypatch.setenv("SWARM_ENABLE_DCUTR", "true")
    monkeypatch.setenv("SWARM_MAX_STRANGER_TRANSFERS", "3")
    monkeypatch.setenv("SWARM_CONN_RATE_PER_IP", "2.5")
    monkeypatch.setenv("SWARM_MAX_PREAUTH_PER_IP", "4")
    monkeypatch.setenv("SWARM_ADVERTISE_PRIVATE", "true")
    s = load_settings()
    assert s.relay_addrs == [PEER, PEER.replace("4001", "4002")]
    net = build_net_config(s)
    assert net.enable_relay and net.enable_dcutr and net.max_stranger_transfers == 3
    assert net.conn_rate_per_ip == 2.5 and net.max_preauth_per_ip == 4
    assert net.conn_burst_per_ip == NetConfig().conn_burst_per_ip  # unset: one default
    assert net.advertise_private is True and default.advertise_private is None  # None: auto
    with pytest.raises(SettingsError, match="SWARM_RELAY_ADDRS: needs SWARM_RELAY_CLIENT=true"):
        load_settings(relay_client=False)


@pytest.mark.parametrize(
    ("env", "value", "expect"),
    [
        ("SWARM_MAX_STRANGER_TRANSFERS", "0", "must be > 0 (got 0)"),
        ("SWARM_MAX_STRANGER_TRANSFERS", "-2", "must be > 0 (got -2)"),
        ("SWARM_CONN_BURST_TOTAL", "0", "must be > 0 (got 0.0)"),
        ("SWARM_CONN_RATE_TOTAL", "nan", "must be > 0 (got nan)"),
        ("SWARM_CONN_RATE_PER_IP", "inf", "must be finite (got inf)"),
        ("SWARM_MAX_PREAUTH_CONNS", "-1", "must be > 0 (got -1)"),
    ],
)
def test_a_network_limit_netconfig_refuses_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: str,
    value: str,
    expect: str,
) -> None:
    import typer

    from swarm_tune.runtime.net.node_main import _load

    monkeypatch.setenv(env, value)
    with pytest.raises(typer.Exit) as info:
        _load(None)
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == f"{env}: {expect}"  # one line


def test_bad_env_var_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_LISTEN_PORT", "70000")
    with pytest.raises(SettingsError, match=r"^SWARM_LISTEN_PORT: .*\(got 70000\)$"):
        load_settings()


def test_dotenv_file_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nSWARM_NODE_ID=from-file\nSWARM_LISTEN_PORT=4500\nSWARM_HF_TOKEN=\n"
    )
    s = load_settings()  # ./.env is the default file
    assert (s.node_id, s.listen_port, s.hf_token) == ("from-file", 4500, None)
    monkeypatch.setenv("SWARM_LISTEN_PORT", "4600")  # the environment beats the file
    assert load_settings().listen_port == 4600
    assert load_settings(listen_port=4700).listen_port == 4700  # keyword args beat both
    other = tmp_path / "other.env"
    other.write_text("SWARM_NODE_ID=other\n")
    assert load_settings(env_file=other).node_id == "other"


def test_missing_explicit_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(env_file=tmp_path / "nope.env")


def test_checkpoint_dir_in_user_space_is_fine(tmp_path: Path) -> None:
    assert load_settings(checkpoint_dir=tmp_path / "ck").checkpoint_dir == tmp_path / "ck"
    assert load_settings(checkpoint_dir="relative/ck").checkpoint_dir == Path("relative/ck")


def test_direct_construction_works() -> None:
    s = NodeSettings(node_id="a", run_id="r", num_shards=3, shard_index=2, device="CUDA:1")
    assert s.device == "cuda:1" and s.shard_index == 2


@settings(max_examples=60, deadline=None)
@given(port=st.integers(min_value=-100_000, max_value=200_000))
def test_port_rule_matches_range(port: int) -> None:
    if 0 <= port <= 65535:
        assert load_settings(listen_port=str(port), metrics_port=0).listen_port == port
    else:
        with pytest.raises(SettingsError, match=rf"SWARM_LISTEN_PORT: .*\(got {port}\)"):
            load_settings(listen_port=str(port))


@settings(max_examples=40, deadline=None)
@given(
    overrides=st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
        st.one_of(
            st.integers(-(10**6), 10**6),
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False, width=32),
            st.sampled_from(["inf", "nan", "gelu", "e5", "x1"]),
            st.from_regex(r"[a-z]{1,6}", fullmatch=True),
        ),
        max_size=5,
    )
)
def test_overrides_text_round_trip(overrides: dict[str, int | float | bool | str]) -> None:
    from swarm_tune.runtime.ops.settings import format_overrides

    text = format_overrides(overrides)
    loaded = load_settings(model_overrides=text).model_overrides
    expected = {
        k: (v if not isinstance(v, str) or v not in ("true", "false") else v == "true")
        for k, v in overrides.items()
    }
    assert loaded == expected


def test_unknown_keyword_is_an_error_not_ignored() -> None:
    with pytest.raises(SettingsError, match=r"^listen_prot: is not a setting$"):
        load_settings(listen_prot=4001)


def test_unknown_env_vars_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from swarm_tune.runtime.ops.settings import unknown_env_vars

    monkeypatch.setenv("SWARM_LISTEN_PROT", "1")
    (tmp_path / ".env").write_text("SWARM_DEVISE=cuda\nSWARM_DEVICE=cpu\n")
    assert unknown_env_vars() == ["SWARM_DEVISE", "SWARM_LISTEN_PROT"]
    assert load_settings().device == "cpu"  # stray names do not break loading
