"""Peer ids from seeds match libp2p; multiaddr checks; atomic writes survive failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.ops.addresses import validate_multiaddr
from swarm_tune.runtime.ops.atomic_io import atomic_write_text
from swarm_tune.runtime.ops.peer_id import parse_seed_hex, peer_id_from_seed


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_peer_id_matches_libp2p(seed: bytes) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    expected = ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58()
    assert peer_id_from_seed(seed) == expected


def test_seed_parsing() -> None:
    assert parse_seed_hex("0f" * 32) == bytes([15] * 32)
    for bad in ("0f" * 31, "zz" * 32, ""):
        with pytest.raises(ValueError, match="hex digits"):
            parse_seed_hex(bad)
    with pytest.raises(ValueError, match="32 bytes"):
        peer_id_from_seed(b"short")


PID = peer_id_from_seed(bytes(32))


@pytest.mark.parametrize(
    "addr",
    [
        f"/ip4/127.0.0.1/tcp/4001/p2p/{PID}",
        f"/ip6/::1/tcp/1/p2p/{PID}",
        f"/dns4/relay.example.org/tcp/443/p2p/{PID}",
        f"/dns6/a-b.c/tcp/65535/p2p/{PID}",
        f"/ip4/10.0.0.1/tcp/4001/p2p/{PID}/p2p-circuit/p2p/{PID}",
        "/ip4/1.2.3.4/tcp/9/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
    ],
)
def test_valid_multiaddrs(addr: str) -> None:
    assert validate_multiaddr(f"  {addr} ") == addr


@pytest.mark.parametrize(
    ("addr", "why"),
    [
        ("ip4/1.2.3.4/tcp/1/p2p/" + PID, "starts with '/'"),
        ("/ip4/1.2.3.4/tcp/1", "incomplete"),
        ("/udp/1.2.3.4/tcp/1/p2p/" + PID, "/ip4, /ip6"),
        ("/ip4/::1/tcp/1/p2p/" + PID, "IPv4"),
        ("/ip6/1.2.3.4/tcp/1/p2p/" + PID, "IPv6"),
        ("/dns4/-bad-/tcp/1/p2p/" + PID, "DNS"),
        ("/ip4/1.2.3.4/udp/1/p2p/" + PID, "/tcp/"),
        ("/ip4/1.2.3.4/tcp/70000/p2p/" + PID, "between 1 and 65535"),
        ("/ip4/1.2.3.4/tcp/1/p2p/0OIl" + PID[4:], "peer id"),
        ("/ip4/1.2.3.4/tcp/1/ipfs/" + PID, "peer id"),
        ("/ip4/1.2.3.4/tcp/1/p2p/" + PID + "/ws", "p2p-circuit"),
    ],
)
def test_invalid_multiaddrs(addr: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_multiaddr(addr)
    assert why in str(info.value)


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=80))
def test_validate_multiaddr_never_crashes(text: str) -> None:
    # Arbitrary text gives ValueError or an address that is dialable-shaped, nothing else.
    try:
        clean = validate_multiaddr(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert clean == text.strip() and "/tcp/" in clean and "/p2p/" in clean


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    target.write_text("old\n")
    target.chmod(0o640)
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    atomic_write_text(tmp_path / "fresh.env", "x=1\n", mode=0o600)
    assert (tmp_path / "fresh.env").stat().st_mode & 0o777 == 0o600


def test_failed_atomic_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "half written \ud800 never lands")  # unencodable
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
