"""Derive a libp2p peer id from an Ed25519 seed without starting a host.

Why this lives in ops: operators need a *stable, known-in-advance* peer id for bootstrap
and relay nodes (it is baked into compose files and run manifests as ``/p2p/<id>``). The
seed is the 32-byte RFC 8032 private-key seed, exactly what
``libp2p.crypto.ed25519.create_new_key_pair(seed)`` uses; the derivation itself is the wire
layer's (one implementation, tested against libp2p there).
"""

from __future__ import annotations

from swarm_tune.runtime.wire.identity import Identity

__all__ = ["parse_seed_hex", "peer_id_from_seed"]


def parse_seed_hex(seed_hex: str) -> bytes:
    """Decode a 64-hex-digit seed, raising ValueError with a readable message."""
    text = seed_hex.strip()
    if len(text) != 64:
        raise ValueError("must be exactly 64 hex digits (32 bytes)")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError("must contain only hex digits 0-9a-f") from None


def peer_id_from_seed(seed: bytes) -> str:
    """The base58 peer id (``12D3KooW...``) of the Ed25519 identity built from ``seed``."""
    if len(seed) != 32:
        raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
    return Identity.from_seed(seed).peer_id
