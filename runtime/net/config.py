"""Limits and feature flags of the network driver, in one frozen value.

Why one dataclass and not keyword soup: every bound that protects the node from a hostile
peer (message caps, memory budget, timeouts, slow-sender rate) must be visible and
reviewable in one place, and the ops layer (pydantic-settings, ``SWARM_*``) maps onto it
1:1. Defaults are sized for a GPT-2-small fp16 update (~248 MB) with headroom.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm_tune.runtime.net.errors import ConfigError

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Bounds and switches for :func:`swarm_tune.runtime.net.open_net_node`."""

    #: Largest bulk message accepted from a peer (bytes). Offers above it are refused
    #: before a single payload byte is read or allocated.
    max_message_size: int = 512 * MiB
    #: Total bytes of in-flight inbound bulk transfers; offers beyond it answer BUSY.
    max_inbound_bytes: int = 1024 * MiB
    #: In-flight inbound bulk bytes any one peer may hold reserved (an honest peer has one
    #: contribution or state answer in flight to us at a time).
    max_inbound_per_peer: int = 512 * MiB
    #: Largest control message (``send_small``).
    max_small_size: int = 64 * 1024
    #: Per-peer dial timeout for bootstrap peers (seconds).
    bootstrap_timeout: float = 10.0
    #: Give up on any single read that makes no progress for this long (seconds).
    idle_timeout: float = 30.0
    #: Slowest acceptable sender (bytes/s); sets the whole-transfer deadline together
    #: with ``idle_timeout`` so a peer dribbling one byte every 29 s cannot hold memory.
    min_rate: float = 1.0 * MiB
    #: Timeout of the offer/ack handshake and of small messages (seconds).
    control_timeout: float = 10.0
    #: Timeout for the direct TCP connect before falling back to libp2p streams.
    direct_connect_timeout: float = 5.0
    #: Use the direct TCP data channel when possible (else always libp2p streams).
    direct_tcp: bool = True
    #: Host/port of the direct data listener; None = same IP as the first listen addr.
    data_host: str | None = None
    data_port: int = 0
    #: Unauthenticated data connections allowed at once (each only holds 32 bytes).
    max_pending_data_conns: int = 64
    #: Capacity of ``NetNode.incoming``; a full queue back-pressures senders (their ack
    #: waits) instead of dropping messages.
    incoming_capacity: int = 16
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
            "max_inbound_per_peer": self.max_inbound_per_peer,
            "max_small_size": self.max_small_size,
            "bootstrap_timeout": self.bootstrap_timeout,
            "idle_timeout": self.idle_timeout,
            "min_rate": self.min_rate,
            "control_timeout": self.control_timeout,
            "direct_connect_timeout": self.direct_connect_timeout,
            "max_pending_data_conns": self.max_pending_data_conns,
            "incoming_capacity": self.incoming_capacity,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.max_small_size >= 1 << 32:
            raise ConfigError("max_small_size must fit in a u32 length prefix")
        if not 0 <= self.data_port < 65536:
            raise ConfigError(f"data_port out of range: {self.data_port}")

    def transfer_deadline(self, size: int) -> float:
        """Seconds allowed for moving ``size`` bytes at the slowest acceptable rate."""
        return self.idle_timeout + size / self.min_rate
