"""Shared helpers for the wire tests (imported by path-based test modules)."""

from __future__ import annotations

import json
import struct

import blake3
import torch

from swarm_tune.runtime.wire import Envelope, Identity, MsgType
from swarm_tune.runtime.wire.peer_id import peer_id_bytes_from_public_key

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
RUN = "run-test"


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN-safe), plus dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(
        torch.equal(
            a.contiguous().reshape(-1).view(torch.uint8),
            b.contiguous().reshape(-1).view(torch.uint8),
        )
    )


def small_envelope(identity: Identity = ALICE, round: int = 3) -> Envelope:
    g = torch.Generator().manual_seed(7)
    return Envelope(
        msg_type=MsgType.CONTRIBUTION,
        run_id=RUN,
        round=round,
        sender=identity.peer_id,
        meta={"n": 128, "lr": 0.5, "tags": ["a", 1, None, True]},
        tensors={
            "w": torch.randn(3, 2, generator=g),
            "h": torch.randn(4, generator=g).to(torch.bfloat16),
            "q": torch.randint(-128, 127, (5,), dtype=torch.int8, generator=g),
        },
    )


def build_raw(
    identity: Identity,
    header: bytes | str | object,
    payload: bytes,
    *,
    run_id: str = RUN,
    msg_type: int = int(MsgType.CONTRIBUTION),
    round: int = 1,
    pad: bool = True,
) -> bytearray:
    """Assemble and sign a message straight from the documented layout.

    This is an independent implementation of the format (it shares no code with the
    encoder), used to feed the decoder authenticated-but-hostile headers.
    """
    if not isinstance(header, bytes):
        header = (header if isinstance(header, str) else json.dumps(header)).encode()
    rid = run_id.encode()
    fixed = 102
    if pad:
        unpadded = fixed + len(rid) + len(header) + 64
        header += b" " * (-unpadded % 64)
    pre = struct.pack(
        "<4sHHHBBQIQ", b"SWRM", 1, msg_type, 0, len(rid), 0, round, len(header), len(payload)
    )
    sender = peer_id_bytes_from_public_key(identity.public_key)
    signed = pre + sender + blake3.blake3(payload).digest() + rid + header
    sig = identity.sign(b"swarm-tune/wire/v1/sig\x00" + blake3.blake3(signed).digest())
    return bytearray(signed + sig + payload)
