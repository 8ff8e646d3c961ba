"""Derive a libp2p peer id from an Ed25519 seed without starting a host.

Why this lives in ops: operators need a *stable, known-in-advance* peer id for bootstrap
and relay nodes (it is baked into compose files and run manifests as ``/p2p/<id>``). The
seed is the 32-byte RFC 8032 private-key seed, exactly what
``libp2p.crypto.ed25519.create_new_key_pair(seed)`` uses, so the id printed here is the id
the running node will have. Only PyNaCl is needed, which the base install already has.
"""

from __future__ import annotations

from nacl.signing import SigningKey

from swarm_tune.runtime.ops.addresses import BASE58_ALPHABET

__all__ = ["parse_seed_hex", "peer_id_from_seed"]

# protobuf PublicKey{Type: Ed25519 (1), Data: <32 bytes>} header
_ED25519_PUBKEY_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
# keys <= 42 bytes use the identity multihash (code 0x00) instead of sha256
_IDENTITY_MULTIHASH = 0x00


def parse_seed_hex(seed_hex: str) -> bytes:
    """Decode a 64-hex-digit seed, raising ValueError with a readable message."""
    text = seed_hex.strip()
    if len(text) != 64:
        raise ValueError("must be exactly 64 hex digits (32 bytes)")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError("must contain only hex digits 0-9a-f") from None


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(BASE58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def peer_id_from_seed(seed: bytes) -> str:
    """The base58 peer id (``12D3KooW...``) of the Ed25519 identity built from ``seed``."""
    if len(seed) != 32:
        raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
    public = bytes(SigningKey(seed).verify_key)
    encoded = _ED25519_PUBKEY_PREFIX + public
    return _b58encode(bytes([_IDENTITY_MULTIHASH, len(encoded)]) + encoded)
