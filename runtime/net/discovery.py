"""DHT discovery: provider records under the run id, so members find each other without a
common bootstrap peer surviving.

Why provider records: every member of a run announces itself as a "provider" of one key
derived from the run id; any member can ask the DHT for the providers of that key and gets
peer ids with the addresses they published. Members of other runs, DHT-only neighbours and
relays are never providers of this key, so the answers are candidates for *this* run only
(and still just candidates: the core decides whom to dial, and a connection proves the peer
id, a verified message proves membership). py-libp2p 0.8.1's ``KadDHT.provide`` /
``find_providers`` take a multihash in hex; the key is sha2-256 of a namespaced run id.

Peers a node is connected to are added to its routing table here too (py-libp2p does not
do that by itself for connections the DHT did not make), so the DHT works over the same
connections the swarm already has.

Why a node behind a NAT publishes its relayed addresses, not its own (``publish_view``): a
provider record goes to strangers all over the DHT, and a private, loopback or link-local
address in it is both useless to them (they cannot dial it) and a map of the node's inside
network. The record's addresses come from ``host.get_addrs()``, which cannot carry a circuit
address: py-libp2p 0.8.1 strips the first ``/p2p/`` component of every address it advertises
and appends the host's own id, which turns ``<relay>/p2p/R/p2p-circuit`` into the relay's
address with our id. So the DHT's provider store is given a view of the host whose
``get_addrs`` is :func:`dht_addrs`; identify (peers already connected) keeps the host's own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID

log = logging.getLogger(__name__)

MAX_PROVIDERS = 32


def run_key(run_id: str) -> str:
    """The DHT key members of ``run_id`` provide: a sha2-256 multihash, hex."""
    digest = hashlib.sha256(f"swarm-tune/run/{run_id}".encode()).hexdigest()
    return "1220" + digest


async def add_peers(dht: Any, peers: list[str]) -> None:
    for peer in peers:
        try:
            await dht.add_peer(ID.from_base58(peer))
        except Exception as exc:  # a DHT refusal is not our failure; the next round retries
            log.debug("dht.add_peer %s failed: %s", peer, exc)


async def announce_and_find(dht: Any, run_id: str, timeout: float) -> list[tuple[str, str]]:
    """Provide the run key, then return (peer id, multiaddr) of the key's other providers."""
    key = run_key(run_id)
    me = str(dht.host.get_id())
    with trio.move_on_after(timeout):
        try:
            await dht.provide(key)
        except Exception as exc:
            log.info("dht.provide failed: %s", exc)
    infos: list[Any] = []
    with trio.move_on_after(timeout):
        try:
            infos = await dht.find_providers(key, MAX_PROVIDERS)
        except Exception as exc:
            log.info("dht.find_providers failed: %s", exc)
    found: list[tuple[str, str]] = []
    for info in infos[:MAX_PROVIDERS]:
        peer = str(info.peer_id)
        # Our nodes publish interface addresses, loopback last (host.py); a wildcard one
        # (an older or foreign peer) names nobody.
        addrs = [str(a) for a in info.addrs if not str(a).startswith(("/ip4/0.0.0.0/", "/ip6/::/"))]
        if peer != me and addrs:
            addr = addrs[0]
            found.append((peer, addr if "/p2p/" in addr else f"{addr}/p2p/{peer}"))
    return found


def dht_addrs(
    own: list[multiaddr.Multiaddr], relayed: list[str] | None
) -> list[multiaddr.Multiaddr]:
    """The addresses a provider record carries. ``relayed`` None: not behind a NAT, the host's
    own. Else (the node keeps relay slots): its relayed addresses, then those of its own that
    are globally routable; never a private, loopback, link-local or shared (CGNAT) one."""
    if relayed is None:
        return own
    return [multiaddr.Multiaddr(a) for a in relayed] + [a for a in own if _is_global(a)]


def _is_global(addr: multiaddr.Multiaddr) -> bool:
    for proto in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(addr.value_for_protocol(proto)).is_global
        except Exception:  # not this protocol (or not an IP at all: dns, circuit, ...)
            continue
    return False


class _ProviderView:
    """The host as the DHT's provider store sees it: everything delegated, but ``get_addrs``
    (the provider record's addresses and its signed peer record) is :func:`dht_addrs`."""

    def __init__(self, host: Any, relayed: Callable[[], list[str] | None]) -> None:
        self._host = host
        self._relayed = relayed

    def get_addrs(self) -> list[multiaddr.Multiaddr]:
        return dht_addrs(self._host.get_addrs(), self._relayed())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)


def publish_view(dht: Any, relayed: Callable[[], list[str] | None]) -> None:
    """Make ``dht``'s provider records carry :func:`dht_addrs` (see the module docstring)."""
    dht.provider_store.host = _ProviderView(dht.host, relayed)
