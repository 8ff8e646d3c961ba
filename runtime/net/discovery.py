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

What the records say about this node's addresses is ``advertise.py``'s rule: the DHT's parts
that tell peers our addresses (its provider, value and routing answers, each with a signed
peer record) see the host through an :class:`AdvertisedView` (:func:`advertise_through`).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import trio
from libp2p.peer.id import ID

from swarm_tune.runtime.net.advertise import AdvertisedView

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


def advertise_through(dht: Any, view: AdvertisedView) -> None:
    """Make every part of ``dht`` that puts our addresses in a message (provider records,
    signed peer records in answers) use ``view`` (see ``advertise.py``)."""
    for part in (dht, dht.peer_routing, dht.provider_store, dht.value_store):
        part.host = view
