"""Provider records that strangers cannot crowd out: per key and in total, a full store evicts
from the source holding the most records instead of refusing newcomers.

Why: py-libp2p 0.8.1 keeps at most 20 providers per key and then *ignores* new ones for the
48 h a record lives. Peer ids are free, so 20 fresh keys sending one ``ADD_PROVIDER`` each
(measured: 25 strangers, one message each) filled a node's slots for the run key, and an honest
member's later announcement was dropped: whoever asked that node found only the strangers. Nor
was the store bounded across keys: every fresh key could add a record under another key.

The rule, applied when a record for a new provider arrives (a known provider only refreshes):

* each record is charged to a *source*: the IPv4 address, or IPv6 /64, of the provider's live
  connection to us (``conn_limit.source_of``, what the connection limits count too); ``relayed``
  for a provider reached only through a relay; ``unconnected`` for one learned from another
  node's answer to our query (py-libp2p caches those in the same store); our own records are
  never evicted;
* a key at ``per_key`` records, or the store at ``total`` records, evicts the oldest record of
  the source holding the most records (of that key, or in all) and counts
  ``dht_provider_evicted``; nobody is blamed (announcing is what providers do);
* a record keeps at most ``MAX_ADDRS`` addresses (py-libp2p keeps every address of a 4 MiB
  message: one stranger could pin gigabytes across the store's records);
* a provider we are connected to keeps its record against third parties: an answer from
  another node (``unconnected``) refreshes only a record that was itself learned that way, so
  a node answering our queries cannot rewrite a member's addresses.

So a flood from one source, however many keys it has, churns its own records once it holds the
most: an honest member on another address keeps its slot, and a late one gets one. Evicting
beats refusing: to keep an honest record out, an attacker needs more sources than the key has
slots, and must keep sending, where refusing let one burst hold every slot for 48 h. Peers
that share an address (a loopback test swarm, a NAT) share a source: among them the oldest
record goes first, and members re-announce every discovery round, which refreshes theirs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from libp2p.kad_dht.common import BUCKET_SIZE
from libp2p.kad_dht.provider_store import ProviderRecord
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from swarm_tune.runtime.net.conn_limit import source_of
from swarm_tune.runtime.net.host import conn_ip
from swarm_tune.runtime.net.refusals import Refusals

#: Records a node keeps in all (about 1 KiB each with MAX_ADDRS addresses).
MAX_RECORDS = 4096
#: Addresses kept per record: a node's listen, public and relayed ones fit.
MAX_ADDRS = 8
SELF = "self"
RELAYED = "relayed"
UNCONNECTED = "unconnected"


class SourcedRecord(ProviderRecord):
    """A provider record and the source it is charged to."""

    def __init__(self, provider_info: Any, source: str) -> None:
        super().__init__(provider_info, time.time())
        self.source = source


def peer_source(host: Any) -> Callable[[str], str]:
    """The source a record from a peer is charged to, as ``host`` sees that peer now."""
    me = str(host.get_id())

    def source(peer: str) -> str:
        if peer == me:
            return SELF
        try:
            conns = host.get_network().get_connections(ID.from_base58(peer))
        except Exception:  # not a peer id we can parse: nobody we are connected to
            return UNCONNECTED
        ips = [ip for ip in map(conn_ip, conns) if ip]
        if ips:
            return source_of(ips[0])
        return RELAYED if conns else UNCONNECTED

    return source


def bound_providers(
    store: Any,
    source: Callable[[str], str],
    refusals: Refusals,
    *,
    per_key: int = BUCKET_SIZE,
    total: int = MAX_RECORDS,
) -> None:
    """Replace ``store.add_provider`` (py-libp2p's ``ProviderStore``) with the rule above;
    ``source(peer_id)`` names the source a new record from ``peer_id`` is charged to."""

    def add_provider(key: bytes, provider: Any) -> None:
        if not provider or not provider.peer_id:
            return
        provider = PeerInfo(provider.peer_id, list(provider.addrs)[:MAX_ADDRS])
        peer = str(provider.peer_id)
        records: dict[str, ProviderRecord] = store.providers.setdefault(key, {})
        src = source(peer)
        old = records.get(peer)
        if old is not None:  # a refresh
            kept = _source(old)
            if src == UNCONNECTED and kept != UNCONNECTED:
                return  # a third party's word does not replace what the provider told us
            records[peer] = SourcedRecord(provider, src)
            return
        if src != SELF:
            if len(records) >= per_key:
                _evict(store.providers, [key], refusals)
            if sum(len(r) for r in store.providers.values()) >= total:
                _evict(store.providers, list(store.providers), refusals)
            records = store.providers.setdefault(key, {})  # the key may have emptied
        records[peer] = SourcedRecord(provider, src)

    setattr(store, "add_provider", add_provider)  # noqa: B010 (an instance attribute on purpose)


def _evict(
    providers: dict[bytes, dict[str, ProviderRecord]], keys: Iterable[bytes], refusals: Refusals
) -> None:
    """Drop the oldest record of the source holding the most records under ``keys``."""
    held: list[tuple[bytes, str, ProviderRecord]] = [
        (key, peer, rec)
        for key in keys
        for peer, rec in providers.get(key, {}).items()
        if _source(rec) != SELF
    ]
    if not held:
        return
    counts = Counter(_source(rec) for _, _, rec in held)
    top = max(counts.values())
    key, peer, _ = min(
        (h for h in held if counts[_source(h[2])] == top),
        key=lambda h: h[2].timestamp,
    )
    del providers[key][peer]
    if not providers[key]:
        del providers[key]
    refusals.count("dht_provider_evicted")


def _source(rec: ProviderRecord) -> str:
    """The source a record is charged to (one loaded without ours: a stranger's answer)."""
    return str(getattr(rec, "source", UNCONNECTED))
