"""Limits and feature flags of the network driver, in one frozen value.

Why one dataclass and not keyword soup: every bound that protects the node from a hostile
peer (message caps, memory budget, timeouts, slow-sender rate) must be visible and
reviewable in one place, and the ops layer (pydantic-settings, ``SWARM_*``) maps onto it
1:1. Defaults are sized for a GPT-2-small fp16 update (~248 MB) with headroom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from swarm_tune.runtime.net.errors import ConfigError

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Bounds and switches for :func:`swarm_tune.runtime.net.open_net_node`."""

    #: Largest bulk message accepted from a peer (bytes). Offers above it are refused
    #: before a single payload byte is read or allocated.
    max_message_size: int = 512 * MiB
    #: Ceiling on inbound bulk bytes actually buffered (buffers grow as bytes arrive,
    #: nothing is reserved on an offer); a transfer that would cross it fails.
    max_inbound_bytes: int = 1024 * MiB
    #: Accepted inbound transfers at once, in total and per peer (an honest peer has one
    #: contribution and maybe one state answer in flight to us). At the total, a new offer
    #: evicts the transfer furthest behind ``min_rate``, if any is behind; else BUSY.
    max_inbound_transfers: int = 32
    max_transfers_per_peer: int = 2
    #: Of those, slots held by strangers (peers the core does not count as members of the
    #: run) together; a member's offer evicts a stranger's transfer (see ``admission.py``).
    max_stranger_transfers: int = 8
    #: Start grace before a transfer counts as behind schedule when slots are short (s):
    #: an honest sender's first bytes arrive within milliseconds of the reply.
    stall_grace: float = 1.0
    #: Largest control message (``send_small``).
    max_small_size: int = 64 * 1024
    #: Per-peer dial timeout for bootstrap peers (seconds).
    bootstrap_timeout: float = 10.0
    #: Give up on any single read that makes no progress for this long (seconds); also
    #: the start grace of a transfer's schedule.
    idle_timeout: float = 30.0
    #: Slowest acceptable sender (bytes/s) after the grace: byte ``n`` of a transfer is due
    #: ``idle_timeout + n / min_rate`` seconds after its offer was accepted, so a peer
    #: dribbling one byte every 20 s is cut after about ``idle_timeout`` seconds.
    min_rate: float = 1.0 * MiB
    #: Timeout of the offer/ack handshake and of small messages (seconds).
    control_timeout: float = 10.0
    #: How long a peer's kept control stream may sit idle between small messages before
    #: the receiver closes it (small.py): a heartbeat every few seconds keeps it in use, a
    #: peer cannot park it for longer.
    small_idle_timeout: float = 20.0
    #: Timeout for the direct TCP connect before falling back to libp2p streams.
    direct_connect_timeout: float = 5.0
    #: Use the direct TCP data channel when possible (else always libp2p streams).
    direct_tcp: bool = True
    #: Host/port of the direct data listener; None = same IP as the first listen addr.
    data_host: str | None = None
    data_port: int = 0
    #: Unauthenticated data connections (token not read yet), in total and per source
    #: IP; a newcomer over a cap evicts the oldest (see ``admission.py``). Each has
    #: ``preauth_timeout`` seconds to present its 32-byte token.
    max_preauth_conns: int = 64
    max_preauth_per_ip: int = 16
    preauth_timeout: float = 3.0
    #: New inbound libp2p connections, checked before any handshake (``conn_limit.py``):
    #: per source IP (an IPv6 /64) a token bucket of ``conn_rate_per_ip`` per second with a
    #: burst of ``conn_burst_per_ip``, a node-wide bucket, and live connections per source.
    conn_rate_per_ip: float = 10.0
    conn_burst_per_ip: float = 40.0
    conn_rate_total: float = 50.0
    conn_burst_total: float = 100.0
    max_conns_per_ip: int = 64
    #: Capacity of ``NetNode.incoming``; a full queue back-pressures senders (their ack
    #: waits) instead of dropping messages.
    incoming_capacity: int = 16
    #: Tell peers (identify, DHT records, a relay's reservation answers, DCUtR's CONNECT) our
    #: private, loopback and link-local addresses:
    #: None (auto) only when the node has no globally routable one (a LAN or loopback run)
    #: and keeps no relay slots; see ``advertise.py``.
    advertise_private: bool | None = None
    enable_mdns: bool = False
    enable_dht: bool = False
    #: Run circuit relay v2 (client side; ``relay_hop`` also serves as a relay).
    enable_relay: bool = False
    relay_hop: bool = False
    enable_dcutr: bool = False

    def __post_init__(self) -> None:
        positive = {
            "max_message_size": self.max_message_size,
            "max_inbound_bytes": self.max_inbound_bytes,
            "max_inbound_transfers": self.max_inbound_transfers,
            "max_transfers_per_peer": self.max_transfers_per_peer,
            "max_stranger_transfers": self.max_stranger_transfers,
            "stall_grace": self.stall_grace,
            "max_small_size": self.max_small_size,
            "bootstrap_timeout": self.bootstrap_timeout,
            "idle_timeout": self.idle_timeout,
            "min_rate": self.min_rate,
            "control_timeout": self.control_timeout,
            "small_idle_timeout": self.small_idle_timeout,
            "direct_connect_timeout": self.direct_connect_timeout,
            "max_preauth_conns": self.max_preauth_conns,
            "max_preauth_per_ip": self.max_preauth_per_ip,
            "preauth_timeout": self.preauth_timeout,
            "incoming_capacity": self.incoming_capacity,
            "conn_rate_per_ip": self.conn_rate_per_ip,
            "conn_burst_per_ip": self.conn_burst_per_ip,
            "conn_rate_total": self.conn_rate_total,
            "conn_burst_total": self.conn_burst_total,
            "max_conns_per_ip": self.max_conns_per_ip,
        }
        for name, value in positive.items():
            if not value > 0:  # NaN fails this too
                raise ConfigError(f"{name} must be > 0 (got {value!r})")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be finite (got {value!r})")
        if self.max_small_size >= 1 << 32:
            raise ConfigError("max_small_size must fit in a u32 length prefix")
        if not 0 <= self.data_port < 65536:
            raise ConfigError(f"data_port out of range: {self.data_port}")

    def transfer_deadline(self, size: int) -> float:
        """Seconds a sender allows for ``size`` bytes at the slowest acceptable rate (the
        receiver's schedule, see ``min_rate``, ends at the same time)."""
        return self.idle_timeout + size / self.min_rate
