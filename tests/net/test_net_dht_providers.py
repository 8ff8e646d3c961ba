"""The DHT provider store under a Sybil flood (``dht_providers.py``), in process: py-libp2p's own
store with the bound installed, fed as its ADD_PROVIDER handler feeds it."""

from __future__ import annotations

import multiaddr
from libp2p.kad_dht.provider_store import ProviderStore
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from swarm_tune.runtime.net.dht_providers import bound_providers
from swarm_tune.runtime.net.host import build_host, peer_id_from_seed
from swarm_tune.runtime.net.refusals import Refusals

KEY = b"run-key"


def info(i: int) -> PeerInfo:
    return PeerInfo(
        ID.from_base58(peer_id_from_seed(bytes([i]) * 32)),
        [multiaddr.Multiaddr("/ip4/8.8.8.8/tcp/1")],
    )


def test_a_sybil_flood_evicts_its_own_records_not_the_members() -> None:
    host = build_host(bytes([99]) * 32)
    me = str(host.get_id())
    store = ProviderStore(host)
    sources = {me: "self"}
    refusals = Refusals()
    bound_providers(store, sources.__getitem__, refusals, per_key=4, total=10)

    def add(i: int, src: str, key: bytes = KEY) -> None:
        sources[str(info(i).peer_id)] = src
        store.add_provider(key, info(i))

    def held(key: bytes = KEY) -> set[int]:
        ids = {str(p.peer_id) for p in store.get_providers(key)}
        return {i for i in range(1, 60) if str(info(i).peer_id) in ids}

    store.add_provider(KEY, PeerInfo(host.get_id(), []))  # our own record
    add(1, "10.0.0.1")  # a member
    for i in range(10, 16):  # six strangers from one address
        add(i, "6.6.6.6")
    assert held() == {1, 14, 15} and len(store.providers[KEY]) == 4  # newest Sybils only
    add(2, "10.0.0.2")  # a late member still gets a slot (py-libp2p refused it: key full)
    assert held() == {1, 2, 15}
    add(1, "unconnected")  # a refresh (here from another node's answer) evicts nobody
    assert held() == {1, 2, 15} and me in store.providers[KEY]
    assert store.providers[KEY][str(info(1).peer_id)].source == "10.0.0.1"  # nor moves it
    assert refusals.counts["dht_provider_evicted"] == 5
    for i in range(20, 40):  # one record each under twenty other keys: the total holds
        add(i, "6.6.6.6", key=bytes([i]))
    assert sum(len(r) for r in store.providers.values()) == 10
    assert held() >= {1, 2} and me in store.providers[KEY]


def test_a_record_keeps_few_addresses_and_a_third_party_cannot_rewrite_a_members() -> None:
    """A stranger's ADD_PROVIDER may carry ~100,000 addresses in 4 MiB: the record keeps
    MAX_ADDRS. Another node's answer naming a member we are connected to with other
    addresses leaves the member's record as the member told it."""
    from swarm_tune.runtime.net.dht_providers import MAX_ADDRS

    host = build_host(bytes([98]) * 32)
    store = ProviderStore(host)
    member, stranger = info(1), info(2)
    sources = {str(member.peer_id): "10.0.0.1", str(stranger.peer_id): "6.6.6.6"}
    bound_providers(store, sources.__getitem__, Refusals())
    many = [multiaddr.Multiaddr(f"/ip4/6.6.{i // 256}.{i % 256}/tcp/1") for i in range(1000)]
    store.add_provider(KEY, PeerInfo(stranger.peer_id, many))
    assert len(store.providers[KEY][str(stranger.peer_id)].provider_info.addrs) == MAX_ADDRS
    store.add_provider(KEY, member)
    sources[str(member.peer_id)] = "unconnected"  # now heard of only through another node
    lie = PeerInfo(member.peer_id, [multiaddr.Multiaddr("/ip4/6.6.6.6/tcp/666")])
    store.add_provider(KEY, lie)
    kept = store.providers[KEY][str(member.peer_id)]
    assert kept.source == "10.0.0.1" and kept.provider_info.addrs == member.addrs
