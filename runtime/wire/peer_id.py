"""libp2p peer ids for Ed25519 keys, without depending on py-libp2p.

Why here: a message names its sender by libp2p peer id, and the receiver must check that
the signing key *is* that peer. For Ed25519, libp2p inlines the key into the id:

    PublicKey protobuf   = 0x08 0x01 (Type = Ed25519) 0x12 0x20 (Data, 32 bytes) || key
    peer id (binary)     = identity multihash = 0x00 (identity) 0x24 (len 36) || protobuf
    peer id (text)       = base58btc(binary)  -> "12D3KooW..."

So the 38-byte binary id both names the peer and carries its verification key; the wire
format transmits exactly these bytes and derives the key from them, which makes "signature
key maps to claimed sender" true by construction. Only Ed25519 is accepted: RSA/secp256k1
ids are sha256 multihashes that do not carry the key. Compatibility with
``libp2p.peer.id.ID.from_pubkey`` is pinned by a test. The wire package is imported by the
simulator too, which must not need the net stack, hence no libp2p import here.
"""

from __future__ import annotations

__all__ = [
    "PEER_ID_BYTES",
    "b58decode",
    "b58encode",
    "peer_id_bytes_from_public_key",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "public_key_from_peer_id_bytes",
]

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}

#: identity multihash (code 0x00, length 36) of protobuf PublicKey{Type=Ed25519, Data=<32>}.
_ED25519_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
PEER_ID_BYTES = len(_ED25519_ID_PREFIX) + 32


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (base58btc), leading zero bytes as '1'."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of `b58encode`; raises ValueError on characters outside the alphabet."""
    n = 0
    for c in text:
        idx = _B58_INDEX.get(c)
        if idx is None:
            raise ValueError("invalid base58 character")
        n = n * 58 + idx
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + body


def peer_id_bytes_from_public_key(public_key: bytes) -> bytes:
    """Binary libp2p peer id (38 bytes) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is exactly 32 bytes")
    return _ED25519_ID_PREFIX + bytes(public_key)


def peer_id_from_public_key(public_key: bytes) -> str:
    """Text (base58btc) libp2p peer id of a raw 32-byte Ed25519 public key."""
    return b58encode(peer_id_bytes_from_public_key(public_key))


def public_key_from_peer_id_bytes(peer_id: bytes) -> bytes:
    """Extract the Ed25519 key from a binary peer id; ValueError if it does not inline one."""
    if len(peer_id) != PEER_ID_BYTES or not peer_id.startswith(_ED25519_ID_PREFIX):
        raise ValueError("not an Ed25519 identity-multihash peer id")
    return bytes(peer_id[len(_ED25519_ID_PREFIX) :])


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Extract the Ed25519 key from a text peer id ("12D3KooW..."); ValueError otherwise."""
    if len(peer_id) > 64:
        raise ValueError("peer id too long")
    return public_key_from_peer_id_bytes(b58decode(peer_id))
