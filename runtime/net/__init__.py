"""The libp2p + trio driver of the real runtime: host, discovery, data and control planes.

Public API (everything else in this package is internal)::

    from swarm_tune.runtime.net import NetConfig, open_net_node

    async with open_net_node(
        seed: bytes,                                  # 32 bytes -> stable Ed25519 peer id
        listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        bootstrap: Sequence[str] = (),                # full multiaddrs with /p2p/<id>
        config: NetConfig | None = None,              # limits, timeouts, feature flags
    ) as net:                                         # -> NetNode
        net.peer_id: str                              # base58 peer id
        net.multiaddrs: list[str]                     # dialable, each ending /p2p/<id>
        await net.connect(multiaddr: str) -> str      # returns the remote peer id
        await net.disconnect(peer_id: str) -> None
        net.connected_peers() -> list[str]
        await net.send_bulk(peer_id, data) -> None    # large message, returns when the
                                                      # receiver confirmed; raises
                                                      # SendRejected/SendTimeout/SendError
        await net.send_small(peer_id, data) -> None   # <= max_small_size, acked
        net.incoming: trio.MemoryReceiveChannel[Incoming]      # (peer_id, remote_ip, data)
        net.peer_events: trio.MemoryReceiveChannel[PeerEvent]  # incl. PeerMisbehaved
        net.refusals.counts: Counter[str]             # every refusal, by reason
        net.bootstrap_done: trio.Event                # all bootstrap dials finished
        net.bootstrapped: list[str]                   # peer ids reached by bootstrap
        net.host                                      # the py-libp2p IHost (escape hatch)
        net.services: dict[str, Any]                  # "dht" / "relay" / "dcutr" if enabled

    peer_id_from_seed(seed: bytes) -> str

``peer_id`` in every ``Incoming`` is the peer proven by the Noise handshake of the
connection, never a field of the payload. Bulk messages
arrive whole (bounded by ``NetConfig.max_message_size``) in the same ``incoming`` channel
as small ones; the SWRM decoder (``swarm_tune.runtime.wire``) tells them apart.

Why the bulk plane leaves libp2p for the bytes: see ``bulk.py`` (measured ~15x).

The names load on first use (runtime/lazy_exports.py): ``swarm-tune node`` checks its
settings before py-libp2p and trio load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swarm_tune.runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from swarm_tune.runtime.net.config import NetConfig
    from swarm_tune.runtime.net.errors import (
        ConfigError,
        FrameError,
        NetError,
        NotConnected,
        SendError,
        SendRejected,
        SendTimeout,
    )
    from swarm_tune.runtime.net.events import (
        Incoming,
        PeerConnected,
        PeerDisconnected,
        PeerEvent,
        PeerMisbehaved,
    )
    from swarm_tune.runtime.net.host import peer_id_from_seed
    from swarm_tune.runtime.net.node import NetNode, open_net_node

# exported name -> the submodule that defines it
__getattr__ = lazy_exports(
    __name__,
    {
        "NetConfig": "config",
        "ConfigError": "errors",
        "FrameError": "errors",
        "NetError": "errors",
        "NotConnected": "errors",
        "SendError": "errors",
        "SendRejected": "errors",
        "SendTimeout": "errors",
        "Incoming": "events",
        "PeerConnected": "events",
        "PeerDisconnected": "events",
        "PeerEvent": "events",
        "PeerMisbehaved": "events",
        "peer_id_from_seed": "host",
        "NetNode": "node",
        "open_net_node": "node",
    },
)

__all__ = [
    "ConfigError",
    "FrameError",
    "Incoming",
    "NetConfig",
    "NetError",
    "NetNode",
    "NotConnected",
    "PeerConnected",
    "PeerDisconnected",
    "PeerEvent",
    "PeerMisbehaved",
    "SendError",
    "SendRejected",
    "SendTimeout",
    "open_net_node",
    "peer_id_from_seed",
]
