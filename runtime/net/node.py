"""``NetNode``: one running libp2p host plus the data and control planes, as one scope.

Why an async context manager that owns a nursery: every background task (libp2p
services, the direct-data listener, bootstrap dialling, optional DHT / relay / DCUtR
services) lives inside ``open_net_node``'s scope and is cancelled when it
exits — no orphan tasks, no global state, and a test can open three nodes in one trio
run. Start-up is event-driven (``nursery.start`` returns once the listener is bound);
nothing waits on a bare sleep.

Peer lifecycle: a libp2p notifee sees every connection open/close. A peer may hold
several connections (simultaneous dials), so we count them and emit ``PeerConnected``
on the first and ``PeerDisconnected`` when the last one closes. Notifee callbacks run on
py-libp2p's event path, so they only ``send_nowait`` into a generously sized channel.

Mounted protocols are only the ones the node uses: bulk, small, py-libp2p's identify and
ping, and the DHT / relay / DCUtR ones when enabled. There is no pubsub: the driver never
published on it, and every mounted protocol is a parser a stranger can feed (the issue's
two-byte crash was on ``/meshsub/1.1.0``). Every inbound stream runs isolated (``guard``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.tools.anyio_service import background_trio_service

from swarm_tune.runtime.net.advertise import AdvertisedView, tell_through_dcutr
from swarm_tune.runtime.net.bulk import BULK_PROTOCOL, BulkPlane
from swarm_tune.runtime.net.config import NetConfig
from swarm_tune.runtime.net.conn_limit import InboundLimiter, limit_inbound
from swarm_tune.runtime.net.errors import ConfigError, SendError
from swarm_tune.runtime.net.events import (
    Incoming,
    PeerConnected,
    PeerDisconnected,
    PeerEvent,
    PeerMisbehaved,
)
from swarm_tune.runtime.net.guard import IDENTIFY, isolate_streams, watch_resets
from swarm_tune.runtime.net.host import (
    build_host,
    conn_ip,
    dial,
    dial_bootstrap,
    full_multiaddrs,
    is_circuit,
    multiaddr_ip,
    parse_multiaddr,
)
from swarm_tune.runtime.net.refusals import Refusals
from swarm_tune.runtime.net.small import SMALL_PROTOCOL, SmallPlane
from swarm_tune.runtime.protocol.reasons import RejectReason

log = logging.getLogger(__name__)

EVENT_CAPACITY = 4096


class _PeerNotifee(INotifee):
    def __init__(self, node: NetNode) -> None:
        self._node = node

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._node._on_connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._node._on_disconnected(conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


class NetNode:
    """A started node. Obtain one with :func:`open_net_node`."""

    def __init__(self, host: IHost, config: NetConfig, nursery: trio.Nursery) -> None:
        self.host = host
        self.config = config
        self._nursery = nursery
        self._in_send, self.incoming = trio.open_memory_channel[Incoming](config.incoming_capacity)
        self._ev_send, self.peer_events = trio.open_memory_channel[PeerEvent](EVENT_CAPACITY)
        #: Every refusal by reason (exported in /metrics); peer faults become events.
        self.refusals = Refusals(self._blame)
        self.bulk = BulkPlane(host, config, self._in_send.send, self.refusals)
        self.small = SmallPlane(host, config, self._in_send.send, self.refusals)
        self.services: dict[str, Any] = {}
        #: Behind a NAT: the relayed addresses held (``relays.keep_relay_slots``); identify and
        #: the DHT's records carry these, never a private address (``advertise.py``).
        #: None: not behind a NAT.
        self.relayed: list[str] | None = None
        #: The host as peers are told about it (identify, DHT records): ``advertise.py``.
        self.view = AdvertisedView(host, lambda: self.relayed, config.advertise_private)
        self._conn_counts: dict[str, int] = {}
        #: Set once bootstrap dialling has finished (successfully or not).
        self.bootstrap_done = trio.Event()
        self.bootstrapped: list[str] = []

    # ----------------------------------------------------------------- identity/peers

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id())

    @property
    def multiaddrs(self) -> list[str]:
        """Full dialable addresses, each ending in ``/p2p/<peer id>``."""
        return full_multiaddrs(self.host)

    @property
    def told_multiaddrs(self) -> list[str]:
        """Of those (and the relayed ones), what peers may be told (``advertise.py``)."""
        return full_multiaddrs(self.view)  # type: ignore[arg-type]

    def connected_peers(self) -> list[str]:
        return sorted(self._conn_counts)

    def prioritise(self, is_member: Callable[[str], bool]) -> None:
        """Bulk offers from peers ``is_member`` names come before strangers' (the driver
        passes the core's view of who belongs to the run; see ``admission.py``)."""
        self.bulk.is_member = is_member

    async def connect(self, addr: str) -> str:
        """Dial a full multiaddr; returns the peer id. Raises :class:`SendError`."""
        try:
            with trio.fail_after(self.config.bootstrap_timeout):
                maddr = parse_multiaddr(addr)
                if is_circuit(maddr):
                    return await self._dial_circuit(maddr)
                return await dial(self.host, maddr)
        except ConfigError:
            raise
        except trio.TooSlowError:
            raise SendError(f"dial {addr} timed out") from None
        except Exception as exc:
            raise SendError(f"dial {addr} failed: {exc}") from exc

    async def _dial_circuit(self, maddr: multiaddr.Multiaddr) -> str:
        # py-libp2p 0.8.1's swarm drops /p2p-circuit addresses from every dial (and its
        # transport manager would hand them to TCP), so relayed dials go to the circuit
        # transport itself, which registers the upgraded connection with the swarm.
        circuit = self.services.get("circuit")
        if circuit is None:
            raise ConfigError(f"relayed address but relay support is off: {maddr}")
        conn = await circuit.dial(maddr)
        return str(conn.muxed_conn.peer_id)

    async def reserve_relay(self, relay_addr: str) -> str:
        """Reserve a slot on the relay at ``relay_addr`` (refreshed for the node's lifetime);
        returns the relayed address others dial to reach this node from behind a NAT.

        Raises :class:`SendError` (relay unreachable or refused), :class:`ConfigError` (relay
        support off or a bad address).
        """
        from libp2p.peer.id import ID
        from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID

        circuit = self.services.get("circuit")
        if circuit is None:
            raise ConfigError("reserve_relay needs NetConfig(enable_relay=True)")
        relay = await self.connect(relay_addr)
        try:
            with trio.fail_after(self.config.bootstrap_timeout):
                stream = await self.host.new_stream(ID.from_base58(relay), [PROTOCOL_ID])
                reserved = await circuit.reserve(stream, ID.from_base58(relay), self._nursery)
        except trio.TooSlowError:
            raise SendError(f"relay {relay} reservation timed out") from None
        except Exception as exc:
            raise SendError(f"relay {relay} reservation failed: {exc}") from exc
        if not reserved:
            raise SendError(f"relay {relay} refused a reservation")
        return f"{relay_addr}/p2p-circuit/p2p/{self.peer_id}"

    async def disconnect(self, peer_id: str) -> None:
        from libp2p.peer.id import ID

        await self.host.disconnect(ID.from_base58(peer_id))

    # --------------------------------------------------------------------- data plane

    async def send_bulk(self, peer_id: str, data: bytes | bytearray | memoryview) -> None:
        """Deliver one large message; returns after the receiver confirmed it.

        Raises :class:`SendRejected` (refused), :class:`SendTimeout`, :class:`SendError`.
        """
        await self.bulk.send(peer_id, data)

    async def send_small(self, peer_id: str, data: bytes) -> None:
        """Deliver one control message (``<= max_small_size``) with an ack."""
        await self.small.send(peer_id, data)

    # ------------------------------------------------------------- notifee callbacks

    def _on_connected(self, conn: INetConn) -> None:
        peer = str(conn.muxed_conn.peer_id)
        n = self._conn_counts.get(peer, 0)
        self._conn_counts[peer] = n + 1
        if n == 0:
            self._emit(PeerConnected(peer, conn_ip(conn)))

    def _on_disconnected(self, conn: INetConn) -> None:
        peer = str(conn.muxed_conn.peer_id)
        n = self._conn_counts.get(peer, 0)
        if n <= 1:
            self.small.forget(peer)
            if self._conn_counts.pop(peer, None) is not None:
                self._emit(PeerDisconnected(peer))
        else:
            self._conn_counts[peer] = n - 1

    def _blame(self, peer: str, reason: RejectReason) -> None:
        self._emit(PeerMisbehaved(peer, reason))

    def _emit(self, event: PeerEvent) -> None:
        try:
            self._ev_send.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("peer event dropped (consumer lagging or closed): %s", event)

    async def _bootstrap(self, addrs: Sequence[str]) -> None:
        try:
            self.bootstrapped = await dial_bootstrap(
                self.host, addrs, self.config.bootstrap_timeout
            )
        finally:
            self.bootstrap_done.set()


def _inbound_limiter(refusals: Refusals, cfg: NetConfig) -> InboundLimiter:
    return InboundLimiter(
        refusals,
        rate_per_ip=cfg.conn_rate_per_ip,
        burst_per_ip=cfg.conn_burst_per_ip,
        rate_total=cfg.conn_rate_total,
        burst_total=cfg.conn_burst_total,
        max_per_ip=cfg.max_conns_per_ip,
    )


def _data_bind_host(config: NetConfig, listen: Sequence[multiaddr.Multiaddr]) -> str:
    if config.data_host is not None:
        return config.data_host
    for addr in listen:
        if ip := multiaddr_ip(addr):
            return ip
    return "0.0.0.0"


@asynccontextmanager
async def open_net_node(
    seed: bytes,
    listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
    bootstrap: Sequence[str] = (),
    config: NetConfig | None = None,
) -> AsyncIterator[NetNode]:
    """Start a node, yield it, and tear everything down on exit.

    Bootstrap peers are dialled in the background (``node.bootstrap_done`` fires when all
    attempts ended); start-up never waits for them.
    """
    cfg = config or NetConfig()
    listen_addrs = [parse_multiaddr(a) for a in listen]
    host = build_host(seed, enable_mdns=cfg.enable_mdns)
    async with host.run(listen_addrs), trio.open_nursery() as nursery, AsyncExitStack() as stack:
        node = NetNode(host, cfg, nursery)
        limit_inbound(host.get_network(), _inbound_limiter(node.refusals, cfg), trio.current_time)
        host.get_network().register_notifee(_PeerNotifee(node))
        isolate_streams(host, node.refusals)
        advertise_through_identify(host, node.view)
        host.set_stream_handler(BULK_PROTOCOL, node.bulk.handle_offer)
        host.set_stream_handler(SMALL_PROTOCOL, node.small.handle)
        if cfg.direct_tcp:
            await nursery.start(
                node.bulk.serve_data, _data_bind_host(cfg, listen_addrs), cfg.data_port
            )
        await _start_optional_services(node, cfg, stack)
        watch_resets(host, node.refusals)
        nursery.start_soon(node._bootstrap, list(bootstrap))
        try:
            yield node
        finally:
            # Services stop first, while the nursery is not cancelled yet: stopping them in
            # a cancelled scope raised Cancelled, which replaced the caller's exception and
            # was then absorbed by the nursery, so an error (or a failed test assertion)
            # inside ``async with open_net_node(..., enable_dht=True)`` vanished.
            await stack.aclose()
            nursery.cancel_scope.cancel()
            node._ev_send.close()
            node._in_send.close()


def advertise_through_identify(host: IHost, view: AdvertisedView) -> None:
    """Identify answers and identify-push messages name ``view``'s addresses (``advertise.py``)."""
    from libp2p.identity.identify.identify import identify_handler_for
    from libp2p.identity.identify_push.identify_push import push_identify_to_peers

    host.set_stream_handler(IDENTIFY, identify_handler_for(view, use_varint_format=True))  # type: ignore[arg-type]

    async def push_to_all() -> None:  # BasicHost's own, but with the view
        try:
            await push_identify_to_peers(view)  # type: ignore[arg-type]
        except Exception as exc:  # best effort, as the library's
            log.debug("identify push failed: %s", exc)

    setattr(host, "_push_identify_to_all_peers", push_to_all)  # noqa: B010 (on purpose)


async def _start_optional_services(node: NetNode, cfg: NetConfig, stack: AsyncExitStack) -> None:
    """DHT / relay / DCUtR, each a py-libp2p ``Service`` run for the node's lifetime."""
    if cfg.enable_dht:
        from libp2p.kad_dht import DHTMode, KadDHT

        from swarm_tune.runtime.net.dht_providers import bound_providers, peer_source
        from swarm_tune.runtime.net.discovery import advertise_through

        dht = KadDHT(node.host, DHTMode.SERVER)
        advertise_through(dht, node.view)
        bound_providers(dht.provider_store, peer_source(node.host), node.refusals)
        await stack.enter_async_context(background_trio_service(dht))
        node.services["dht"] = dht
    if cfg.enable_relay:
        from libp2p.relay.circuit_v2 import CircuitV2Protocol
        from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
        from libp2p.relay.circuit_v2.transport import CircuitV2Transport

        # The view: a reservation answer names the relay's addresses (``advertise.py``).
        relay = CircuitV2Protocol(node.view, allow_hop=cfg.relay_hop)  # type: ignore[arg-type]
        await stack.enter_async_context(background_trio_service(relay))
        node.services["relay"] = relay
        # The client side: dials /p2p-circuit addresses and makes reservations
        # (``NetNode.connect`` / ``reserve_relay``); the protocol above accepts relayed
        # connections (its STOP handler upgrades them into the swarm).
        roles = RelayRole.STOP | RelayRole.CLIENT
        node.services["circuit"] = CircuitV2Transport(node.host, relay, RelayConfig(roles=roles))
    if cfg.enable_dcutr:
        from libp2p.relay.circuit_v2 import DCUtRProtocol

        dcutr = DCUtRProtocol(node.host)
        tell_through_dcutr(dcutr, node.view)
        await stack.enter_async_context(background_trio_service(dcutr))
        node.services["dcutr"] = dcutr
