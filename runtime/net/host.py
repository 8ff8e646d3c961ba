"""Building the libp2p host: identity from a seed, Noise only, yamux, bootstrap dialling.

Why these choices:

* **Identity from a 32-byte seed.** A node's peer id must survive restarts (reputation,
  run manifests and bootstrap lists refer to it), so the Ed25519 key is derived from a
  seed the operator keeps, not generated per launch.
* **Noise only.** ``libp2p.new_host`` by default also offers TLS, SECIO and *plaintext*
  security; a peer could negotiate down to plaintext and then no peer id would be
  authenticated. We pass an explicit ``sec_opt`` containing only Noise, so every
  connection's remote peer id is proven by the handshake.
* **yamux** is py-libp2p's default muxer and the one go/rust peers prefer.
* **The core decides whom to dial.** py-libp2p's swarm runs an ``AutoConnector`` that dials
  peers from its own peerstore whenever it has fewer than ~200 connections (it logs "below
  target (200); initiating N new dials"): every address identify or a Kad reply ever put in
  the peerstore, a stranger's included, gets dialled. Dialling is a protocol decision (the
  core's ``Dial`` effect, bounded per tick and per peer), so the host gets an auto-connector
  that never starts. No ``ConnectionConfig`` knob does it: its target is the midpoint of the
  low/high watermarks, and a zero high watermark would make the pruner close everything.
  For the same reason a send never dials: ``host.new_stream`` dials any peer the peerstore
  has an address for when no connection is open (peer exchange puts addresses there), so a
  heartbeat to a peer we lost would reconnect behind the core's back, outside its per-tick
  budget. :func:`open_stream` opens streams with dialling refused (:class:`NotConnected`).
* **A dial we ask for is a dial.** py-libp2p 0.8.1's swarm remembers a peer whose every
  address failed and refuses to dial it for 60 s ("recently failed all addresses (negative
  cache)"), without trying. A node that came up before its bootstrap peer listened had
  that peer refused for a minute: its redials (every ``redial_interval``) never left the
  process, the peer (with no bootstrap list of its own) never dialled, and both ran alone
  from their 30 s start deadline (the dashboard test's CI failure; reproduced, see the
  note of the change). Whom to dial and how often is the core's and the driver's (bounded
  per tick and per peer), so the host's cache never blocks (:class:`_NoDialBackoff`).
* **Bootstrap never blocks start-up.** Each bootstrap address is dialled concurrently under
  its own ``trio.move_on_after(timeout)``; failures are logged and counted, not raised. A
  node whose bootstrap list is entirely dead still starts and can be dialled.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.swarm import Swarm, _NegativePeerCache
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.utils.address_validation import expand_wildcard_address

from swarm_tune.runtime.net.errors import ConfigError, NotConnected
from swarm_tune.runtime.net.negotiate import select

log = logging.getLogger(__name__)

SEED_LEN = 32
#: How long the interface addresses a wildcard listen address expands to are reused.
INTERFACE_TTL_S = 10.0
RESET_GRACE_S = 1.0  # the longest a failed open waits to reset its stream (open_stream)
_WILDCARDS = ("/ip4/0.0.0.0/", "/ip6/::/")
#: Set while one of our sends opens a stream: the swarm's dial_peer then refuses to dial.
_SENDING: contextvars.ContextVar[bool] = contextvars.ContextVar("swarm_tune_sending", default=False)


def keypair_from_seed(seed: bytes) -> KeyPair:
    """Deterministic Ed25519 key pair from a 32-byte seed."""
    if len(seed) != SEED_LEN:
        raise ConfigError(f"identity seed must be {SEED_LEN} bytes, got {len(seed)}")
    try:
        return create_new_key_pair(seed)
    except ValueError as exc:
        raise ConfigError(f"unusable identity seed: {exc}") from exc


def peer_id_from_seed(seed: bytes) -> str:
    """The base58 peer id a node started with ``seed`` will have."""
    return str(ID.from_pubkey(keypair_from_seed(seed).public_key))


def parse_multiaddr(addr: str | multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    try:
        return addr if isinstance(addr, multiaddr.Multiaddr) else multiaddr.Multiaddr(addr)
    except Exception as exc:  # the multiaddr package raises several unrelated types
        raise ConfigError(f"invalid multiaddr {addr!r}: {exc}") from exc


def _is_wildcard(addr: multiaddr.Multiaddr) -> bool:
    return str(addr).startswith(_WILDCARDS)


def expand_wildcards(
    candidates: Sequence[multiaddr.Multiaddr],
    expand: Callable[[multiaddr.Multiaddr], list[multiaddr.Multiaddr]] = expand_wildcard_address,
) -> list[multiaddr.Multiaddr]:
    """``candidates`` with each wildcard address replaced by the interface addresses it
    listens on: specific ones first (in order), loopback last; no duplicates."""
    out: list[multiaddr.Multiaddr] = []
    loopback: list[multiaddr.Multiaddr] = []
    for addr in candidates:
        if not _is_wildcard(addr):
            out.append(addr)
            continue
        out.extend(a for a in expand(addr) if not _is_wildcard(a))
        text = str(addr).replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/", 1)
        loopback.append(multiaddr.Multiaddr(text.replace("/ip6/::/", "/ip6/::1/", 1)))
    seen: set[str] = set()
    unique = []
    for addr in out + loopback:
        if str(addr) not in seen:
            seen.add(str(addr))
            unique.append(addr)
    return unique


class _InterfaceAddrs:
    """An ``addrs_factory`` for py-libp2p's host: :func:`expand_wildcards`, the interface
    list re-read at most every ``INTERFACE_TTL_S`` (identify asks for it per connection)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, list[multiaddr.Multiaddr]]] = {}

    def __call__(self, candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        return expand_wildcards(candidates, self._expand)

    def _expand(self, addr: multiaddr.Multiaddr) -> list[multiaddr.Multiaddr]:
        now = time.monotonic()
        hit = self._cache.get(str(addr))
        if hit is None or now - hit[0] > INTERFACE_TTL_S:
            hit = (now, expand_wildcard_address(addr))
            self._cache[str(addr)] = hit
        return hit[1]


class _NeverDials(AutoConnector):
    """An auto-connector that stays stopped: ``maybe_connect`` and the periodic task both
    return at once while ``_started`` is False, which ``start`` leaves it."""

    async def start(self) -> None:
        return None


class _NoDialBackoff(_NegativePeerCache):
    """The swarm's negative dial cache, never filled: a failed dial blocks no later one
    (see the module docstring; our dials are paced by the core and the redial loop)."""

    def mark_failed(self, peer_id: str) -> None:
        return None


def build_host(seed: bytes, *, enable_mdns: bool = False) -> IHost:
    """A libp2p host with a seed-derived identity, Noise-only security and yamux, which
    dials only when asked to (no library auto-connector), and always when asked to (no
    library dial backoff)."""
    key_pair = keypair_from_seed(seed)
    # The Noise static key is ephemeral by design: it is bound to the Ed25519 identity
    # by the handshake payload signature, so it need not be stable.
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_preference="YAMUX",
        enable_mDNS=enable_mdns,
        addrs_factory=_InterfaceAddrs(),
    )
    swarm = host.get_network()
    if not isinstance(swarm, Swarm):  # new_host always builds a Swarm; fail loudly if not
        raise ConfigError(f"unexpected libp2p network type {type(swarm).__name__}")
    swarm.auto_connector = _NeverDials(swarm, swarm.auto_connector.auto_connect_interval)
    if not isinstance(getattr(swarm, "_negative_peer_cache", None), _NegativePeerCache):
        raise ConfigError("unexpected libp2p swarm: no negative dial cache to replace")
    swarm._negative_peer_cache = _NoDialBackoff()
    _refuse_dials_while_sending(swarm)
    return host


def _refuse_dials_while_sending(swarm: Swarm) -> None:
    """Wrap the swarm's one dial entry point (``host.connect`` and ``new_stream`` both end
    there): inside :func:`open_stream` it raises :class:`NotConnected` instead of dialling.
    The check sits at the dial itself, not before ``new_stream``, so a connection that
    closes between a check and the stream cannot slip a dial through."""
    dial_peer: Callable[[ID], Awaitable[list[INetConn]]] = swarm.dial_peer

    async def guarded(peer_id: ID) -> list[INetConn]:
        if _SENDING.get():
            raise NotConnected(f"not connected to {peer_id} (sends never dial)")
        return await dial_peer(peer_id)

    setattr(swarm, "dial_peer", guarded)  # noqa: B010 (an instance attribute on purpose)


async def open_stream(host: IHost, peer: ID, protocol: TProtocol) -> INetStream:
    """A new stream to ``peer`` speaking ``protocol``, on a connection that is already
    open; never dials. The protocol is agreed in one round trip (``negotiate.py``).

    Raises :class:`NotConnected` when there is none, anything py-libp2p or the
    negotiation raises otherwise (the stream is reset then). Not bounded in time itself:
    every caller wraps it in its own deadline (a listener that never answers is stopped
    there, not here).
    """
    token = _SENDING.set(True)
    try:
        stream = await host.get_network().new_stream(peer)
    finally:
        _SENDING.reset(token)
    try:
        await select(stream, protocol)
    except BaseException:
        # Shielded, so a cancelled open still resets its stream, but bounded: the reset's
        # RST frame waits for the connection's write lock and the socket, and a peer that
        # stopped reading would otherwise hold this task past every caller's deadline.
        deadline = trio.current_time() + RESET_GRACE_S
        with trio.CancelScope(shield=True, deadline=deadline), contextlib.suppress(Exception):
            await stream.reset()
        raise
    return stream


def full_multiaddrs(host: IHost) -> list[str]:
    """Listen addresses with ``/p2p/<peer id>`` appended (what others dial)."""
    peer_id = str(host.get_id())
    out = []
    for addr in host.get_addrs():
        text = str(addr)
        out.append(text if "/p2p/" in text else f"{text}/p2p/{peer_id}")
    return out


async def dial(host: IHost, addr: str | multiaddr.Multiaddr) -> str:
    """Connect to a full multiaddr (with ``/p2p/``); returns the remote peer id."""
    maddr = parse_multiaddr(addr)
    try:
        info = info_from_p2p_addr(maddr)
    except Exception as exc:
        raise ConfigError(f"multiaddr lacks a valid /p2p/ peer id: {addr}") from exc
    await host.connect(info)
    return str(info.peer_id)


def is_circuit(addr: multiaddr.Multiaddr) -> bool:
    """True for a relayed (``/p2p-circuit``) address."""
    return any(p.name == "p2p-circuit" for p in addr.protocols())


async def dial_bootstrap(
    host: IHost, addrs: Sequence[str | multiaddr.Multiaddr], timeout: float = 10.0
) -> list[str]:
    """Dial every bootstrap address concurrently, each under its own ``timeout``.

    Returns the peer ids reached. Never raises for unreachable, slow or malformed
    bootstrap entries: they are logged and skipped.
    """
    reached: list[str] = []

    async def one(addr: str | multiaddr.Multiaddr) -> None:
        with trio.move_on_after(timeout) as scope:
            try:
                reached.append(await dial(host, addr))
                return
            except Exception as exc:  # any dial failure is non-fatal by design
                log.warning("bootstrap %s failed: %s", addr, exc)
                return
        if scope.cancelled_caught:
            log.warning("bootstrap %s timed out after %.1fs", addr, timeout)

    async with trio.open_nursery() as nursery:
        for addr in addrs:
            nursery.start_soon(one, addr)
    return reached


def conn_ip(conn: object) -> str:
    """Remote IP of a libp2p connection ('' if unknown or relayed)."""
    try:
        addrs = conn.get_transport_addresses()  # type: ignore[attr-defined]
    except Exception:
        return ""
    for addr in addrs:
        if "p2p-circuit" in str(addr):
            return ""
        if ip := multiaddr_ip(addr):
            return ip
    return ""


def multiaddr_ip(addr: multiaddr.Multiaddr) -> str:
    """The ip4/ip6 component of ``addr`` ('' if it has none)."""
    for proto in ("ip4", "ip6"):
        try:
            value = addr.value_for_protocol(proto)
        except Exception:  # the multiaddr package raises several unrelated types
            value = None
        if value:
            return str(value)
    return ""


def peer_ip(host: IHost, peer: ID) -> str:
    """Remote IP of the first live connection to ``peer`` ('' if none/relayed)."""
    try:
        conns = host.get_network().get_connections(peer)
    except Exception:
        return ""
    return conn_ip(conns[0]) if conns else ""
