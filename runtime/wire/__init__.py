"""SWRM wire format: versioned, signed, bounded binary messages carrying tensors.

The layers, bottom up (each module's docstring explains its design):

* `envelope` — `Envelope` / `MsgType`: the only message shape the wire knows; the protocol
  core converts its typed messages to and from it.
* `codec` — `encode` / `decode`: fixed header + JSON tensor table + raw little-endian
  buffers (safetensors-style, never pickle), Ed25519 signature over a BLAKE3 header digest
  that commits to a BLAKE3 payload digest; zero-copy decode into ``torch.frombuffer`` views.
* `identity` / `peer_id` — `Identity`: the node's Ed25519 key, which is also its libp2p
  identity, so signer, claimed sender and transport peer are all the same id.
* `replay` — `ReplayGuard`: bounded duplicate/stale-round rejection.
* `errors` / `limits` — `WireError` hierarchy (metric-ready ``reason``) and `WireLimits`.

Receiving, in full (the net driver; the transport hands over whole, bounded messages)::

    env = decode(data, expected_run_id=run_id)   # raises a WireError
    replay_guard.admit(env)                       # raises Replay

The names load on first use (runtime/lazy_exports.py): reading a node key or checking a
setting must not pay for torch, which the codec needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swarm_tune.runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from swarm_tune.runtime.wire.codec import (
        DTYPES,
        FORMAT_VERSION,
        MAGIC,
        decode,
        encode,
        encode_buffer,
        message_id,
    )
    from swarm_tune.runtime.wire.envelope import Envelope, MetaScalar, MetaValue, MsgType
    from swarm_tune.runtime.wire.errors import (
        BadMagic,
        BadSignature,
        Malformed,
        Oversized,
        Replay,
        SenderMismatch,
        Truncated,
        UnsupportedVersion,
        WireError,
        WrongRun,
    )
    from swarm_tune.runtime.wire.identity import (
        SEED_ENV_VAR,
        Identity,
        InsecureKeyFile,
        KeyFileError,
    )
    from swarm_tune.runtime.wire.limits import WireLimits
    from swarm_tune.runtime.wire.peer_id import peer_id_from_public_key, public_key_from_peer_id
    from swarm_tune.runtime.wire.replay import ReplayGuard

# exported name -> the submodule that defines it
__getattr__ = lazy_exports(
    __name__,
    {
        "DTYPES": "codec",
        "FORMAT_VERSION": "codec",
        "MAGIC": "codec",
        "decode": "codec",
        "encode": "codec",
        "encode_buffer": "codec",
        "message_id": "codec",
        "Envelope": "envelope",
        "MetaScalar": "envelope",
        "MetaValue": "envelope",
        "MsgType": "envelope",
        "BadMagic": "errors",
        "BadSignature": "errors",
        "Malformed": "errors",
        "Oversized": "errors",
        "Replay": "errors",
        "SenderMismatch": "errors",
        "Truncated": "errors",
        "UnsupportedVersion": "errors",
        "WireError": "errors",
        "WrongRun": "errors",
        "SEED_ENV_VAR": "identity",
        "Identity": "identity",
        "InsecureKeyFile": "identity",
        "KeyFileError": "identity",
        "WireLimits": "limits",
        "peer_id_from_public_key": "peer_id",
        "public_key_from_peer_id": "peer_id",
        "ReplayGuard": "replay",
    },
)

__all__ = [
    "DTYPES",
    "FORMAT_VERSION",
    "MAGIC",
    "SEED_ENV_VAR",
    "BadMagic",
    "BadSignature",
    "Envelope",
    "Identity",
    "InsecureKeyFile",
    "KeyFileError",
    "Malformed",
    "MetaScalar",
    "MetaValue",
    "MsgType",
    "Oversized",
    "Replay",
    "ReplayGuard",
    "SenderMismatch",
    "Truncated",
    "UnsupportedVersion",
    "WireError",
    "WireLimits",
    "WrongRun",
    "decode",
    "encode",
    "encode_buffer",
    "message_id",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
]
