"""The one message shape the wire knows: `Envelope`.

Why a single generic envelope instead of one class per protocol message: the wire layer
must stay ignorant of protocol semantics (it is shared by the real runtime and the
simulator, and the protocol evolves faster than the format). The protocol core maps its
typed messages to an Envelope: a message type, the routing/authentication facts every
message has (run, round, sender), a few small control fields (`meta`) and named tensors.
Tensors travel as raw buffers, never pickled; `meta` is restricted to JSON scalars and
flat lists of scalars so that it cannot smuggle structure the receiver did not expect.

`MsgType` is an IntEnum so new types can be appended without a format change; a receiver
that does not know a type rejects it as `Malformed("unknown_msg_type")`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import TypeAlias

import torch

__all__ = [
    "Envelope",
    "MetaScalar",
    "MetaValue",
    "MsgType",
    "check_meta",
    "valid_name",
]

MetaScalar: TypeAlias = str | int | float | bool | None
MetaValue: TypeAlias = MetaScalar | list[MetaScalar]

# Conservative charset: covers HF parameter names ("transformer.h.0.attn.c_attn.weight")
# and keeps names safe to use as metric labels, file names and log fields.
_NAME_RE = re.compile(r"[A-Za-z0-9_.:/\-]+")


class MsgType(IntEnum):
    """Message kinds. Append new members; never renumber."""

    HEARTBEAT = 1
    CONTRIBUTION = 2
    STATE_REQUEST = 3
    STATE_RESPONSE = 4
    GOODBYE = 5
    GROUP_PIECE = 6  # group rounds (protocol/group.py): reduce-scatter piece
    GROUP_SLICE = 7  # ... an owner's aggregated slice (all-gather)
    AUDIT_REQUEST = 8
    AUDIT_VERDICT = 9


def valid_name(name: object, max_len: int) -> bool:
    """True for a non-empty tensor/meta name of allowed characters and length."""
    return (
        isinstance(name, str) and 0 < len(name) <= max_len and _NAME_RE.fullmatch(name) is not None
    )


def _scalar_ok(v: object) -> bool:
    if v is None or isinstance(v, (str, bool, int)):
        return True
    return isinstance(v, float) and math.isfinite(v)


def check_meta(meta: Mapping[str, object], *, max_entries: int, max_name_len: int) -> str | None:
    """Return None if `meta` is acceptable, else a short reason label."""
    if len(meta) > max_entries:
        return "too_many_meta"
    for key, value in meta.items():
        if not valid_name(key, max_name_len):
            return "bad_meta_key"
        if isinstance(value, list):
            if not all(_scalar_ok(v) for v in value):
                return "bad_meta_value"
        elif not _scalar_ok(value):
            return "bad_meta_value"
    return None


@dataclass(frozen=True, eq=False, slots=True)
class Envelope:
    """A protocol message as the wire sees it.

    ``meta`` and ``tensors`` are stored as read-only mappings. Tensors produced by `decode`
    are zero-copy views of the received buffer when it is writable (bytearray, the bulk
    plane's buffers, `encode_buffer` output); read-only input is copied once. Equality
    is identity (``eq=False``): comparing tensors elementwise is the caller's business.
    ``digest`` is filled in by `decode` (BLAKE3 of the signed header, which commits to the
    payload digest); it identifies the message for replay protection and is empty on
    envelopes built locally.
    """

    msg_type: MsgType
    run_id: str
    round: int
    sender: str
    meta: Mapping[str, MetaValue] = field(default_factory=dict)
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    digest: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    def nbytes(self) -> int:
        """Total tensor payload size in bytes (what dominates the wire size)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())
