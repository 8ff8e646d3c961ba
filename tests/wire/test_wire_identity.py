"""Identity: libp2p peer-id compatibility, determinism, key-file permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.peer.id import ID

from swarm_tune.runtime.wire import (
    Identity,
    InsecureKeyFile,
    KeyFileError,
    peer_id_from_public_key,
    public_key_from_peer_id,
)
from swarm_tune.runtime.wire.peer_id import b58decode, b58encode


@pytest.mark.parametrize("seed_byte", [0, 1, 7, 0x42, 0xFE])
def test_peer_id_matches_libp2p(seed_byte: int) -> None:
    seed = bytes([seed_byte]) * 31 + b"\x09"
    ours = Identity.from_seed(seed)
    kp = create_new_key_pair(seed)  # how the net layer will build its libp2p KeyPair
    theirs = ID.from_pubkey(kp.public_key)
    assert ours.peer_id == theirs.to_base58()
    assert ours.peer_id_bytes == theirs.to_bytes()
    assert peer_id_from_public_key(kp.public_key.to_bytes()) == theirs.to_base58()
    assert kp.private_key.to_bytes() == ours.seed
    assert public_key_from_peer_id(ours.peer_id) == kp.public_key.to_bytes()
    # A signature by our Identity verifies with libp2p's key object: same key, same scheme.
    assert Ed25519PublicKey.from_bytes(ours.public_key).verify(b"hello", ours.sign(b"hello"))


def test_random_identities_match_libp2p() -> None:
    for _ in range(20):
        ident = Identity.generate()
        assert ident.peer_id.startswith("12D3KooW")
        assert ID.from_base58(ident.peer_id).to_bytes() == ident.peer_id_bytes
        assert ID.from_pubkey(Ed25519PublicKey.from_bytes(ident.public_key)) == ID(
            ident.peer_id_bytes
        )


def test_base58_roundtrip_and_errors() -> None:
    for data in (b"", b"\x00", b"\x00\x00\x01", bytes(range(40))):
        assert b58decode(b58encode(data)) == data
    with pytest.raises(ValueError):
        b58decode("0OIl")
    with pytest.raises(ValueError):
        public_key_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")  # sha256 id


def test_seed_determinism_and_text_seeds() -> None:
    seed = bytes(range(32))
    assert Identity.from_seed(seed).peer_id == Identity.from_seed(seed).peer_id
    assert Identity.from_seed_text(seed.hex()).seed == seed
    a = Identity.from_seed_text("node-3")
    assert a.peer_id == Identity.from_seed_text("  node-3\n").peer_id
    assert a.peer_id != Identity.from_seed_text("node-4").peer_id
    assert Identity.from_env({"SWARM_NODE_KEY_SEED": "node-3"}).peer_id == a.peer_id  # type: ignore[union-attr]
    assert Identity.from_env({}) is None
    with pytest.raises(ValueError):
        Identity.from_seed(b"short")
    with pytest.raises(ValueError):
        Identity.from_seed_text("  ")
    assert "seed" not in repr(a) and seed.hex() not in repr(Identity.from_seed(seed))


def test_save_load_roundtrip_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    ident = Identity.generate()
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).peer_id == ident.peer_id
    assert Identity.load_or_create(path).peer_id == ident.peer_id
    fresh = Identity.load_or_create(tmp_path / "new.key")
    assert Identity.load(tmp_path / "new.key").peer_id == fresh.peer_id
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".key-")] == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_load_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    os.chmod(path, mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        Identity.load(path)
    os.chmod(path, 0o400)
    Identity.load(path)  # owner-only read is fine


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage\n",
        b"swarm-tune ed25519 seed v1\nzz\n",
        b"swarm-tune ed25519 seed v1\nabcd\n",
        b"\xff\xfe",
    ],
)
def test_load_rejects_bad_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError):
        Identity.load(path)
