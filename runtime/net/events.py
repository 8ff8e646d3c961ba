"""Values the driver hands to the node loop: received messages and peer lifecycle events.

Why plain NamedTuples: they unpack like the ``(peer_id, remote_ip, data)`` tuples the
protocol driver expects, are immutable, and carry no libp2p types — the protocol core and
the simulator must never import py-libp2p. ``peer_id`` is always the base58 id proven by
the Noise handshake of the connection the bytes came in on, never a value read from the
payload.
"""

from __future__ import annotations

from typing import NamedTuple

from swarm_tune.runtime.protocol.reasons import RejectReason


class Incoming(NamedTuple):
    """One whole message from an authenticated peer.

    ``data`` is ``bytes`` for control messages and a writable ``memoryview`` (numpy-backed,
    see ``bulk.landing``) for bulk messages: the bulk plane receives straight into a buffer
    it then hands over (the receiver owns it; treat it as read-only). Converting to
    ``bytes`` would be one more full copy of a ~250 MB update — measured at ~0.25 s per
    256 MB, as long as the transfer itself.
    """

    peer_id: str
    remote_ip: str
    data: bytes | memoryview


class PeerConnected(NamedTuple):
    peer_id: str
    remote_ip: str


class PeerDisconnected(NamedTuple):
    peer_id: str


class PeerMisbehaved(NamedTuple):
    """The authenticated peer broke a transport rule (see ``refusals``); for the core."""

    peer_id: str
    reason: RejectReason


PeerEvent = PeerConnected | PeerDisconnected | PeerMisbehaved
