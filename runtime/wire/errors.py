"""Typed errors for everything that can go wrong with bytes from a peer.

Why one hierarchy: the wire layer sits directly on hostile input, and the node must turn
every bad message into "drop it, count it, maybe penalise the sender" and never into a
crash. So every failure of `decode` and
`ReplayGuard` raises a `WireError` subclass and nothing else. Drivers catch `WireError`
once; the class tells the protocol core *what kind* of misbehaviour it was (a corrupt
frame is not the same offence as a forged signature), and `reason` is a short, stable,
low-cardinality string meant to be used directly as a metric label
(``wire_rejected_total{reason="bad_signature"}``). Instances may refine the class default
(``Malformed("bad_dtype")``), but reasons never contain peer-controlled text.
"""

from __future__ import annotations

__all__ = [
    "BadMagic",
    "BadSignature",
    "Malformed",
    "Oversized",
    "Replay",
    "SenderMismatch",
    "Truncated",
    "UnsupportedVersion",
    "WireError",
    "WrongRun",
]


class WireError(Exception):
    """Base class: a message or frame was rejected. `reason` is a metric-safe label."""

    default_reason = "wire_error"

    def __init__(self, reason: str | None = None, detail: str = "") -> None:
        self.reason: str = reason or self.default_reason
        self.detail: str = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class Malformed(WireError):
    """Structurally invalid: bad header JSON, bad dtype/shape, bad layout, bad names."""

    default_reason = "malformed"


class Truncated(Malformed):
    """Fewer bytes than the header declares."""

    default_reason = "truncated"


class BadMagic(Malformed):
    """Not a Swarm-Tune message or frame at all."""

    default_reason = "bad_magic"


class UnsupportedVersion(Malformed):
    """A format version this node does not speak."""

    default_reason = "unsupported_version"


class Oversized(WireError):
    """Something exceeds a configured `WireLimits` bound (message, header, tensor count)."""

    default_reason = "oversized"


class BadSignature(WireError):
    """Signature or payload digest does not verify: forged or corrupted in transit."""

    default_reason = "bad_signature"


class SenderMismatch(WireError):
    """Signed sender differs from the authenticated transport peer it arrived from."""

    default_reason = "sender_mismatch"


class WrongRun(WireError):
    """Validly signed, but for a different training run."""

    default_reason = "wrong_run"


class Replay(WireError):
    """Already seen (or too old to tell): a duplicate or replayed message."""

    default_reason = "replay"
