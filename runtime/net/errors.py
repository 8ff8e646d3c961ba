"""Typed errors of the network driver.

Why a small hierarchy: callers (the node loop, the lead's CLI) must tell "the peer said no"
(retry later or elsewhere) from "the bytes never arrived" (count the peer as a straggler)
from "the peer is hostile" (log, drop, maybe ban), without parsing messages. Every failure
that crosses the public API is one of these; nothing from py-libp2p or trio leaks as a
bare ``Exception`` out of ``send_bulk``/``send_small``.
"""

from __future__ import annotations


class NetError(Exception):
    """Base class of every error raised by ``swarm_tune.runtime.net``."""


class ConfigError(NetError, ValueError):
    """A local configuration value (seed, multiaddr, limit) is invalid."""


class FrameError(NetError):
    """A peer sent a malformed, oversized or truncated frame."""


class SendError(NetError):
    """A message could not be delivered (dial failed, stream reset, timeout, no ack)."""


class SendRejected(SendError):
    """The receiver answered but refused the message (too large, busy, bad request)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"receiver rejected the message: {reason}")
        self.reason = reason


class SendTimeout(SendError):
    """The transfer or its confirmation did not complete in time."""


class NotConnected(SendError):
    """No open connection to the peer. Sends never dial: connecting is the core's decision
    (its ``Dial`` effect, bounded per tick and per peer), so a send to a peer we lost fails
    here and the core's next Dial (if it wants the peer back) reconnects."""
