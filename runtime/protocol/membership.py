"""Who is out there: the peer table, heartbeats' bookkeeping, eviction and rejoin.

Why eviction by silence and not by disconnect alone: over the internet a connection can stay
"open" to a peer whose process hung, and a peer can drop its connection and redial a second
later. Silence for ``eviction_timeout`` is the one signal both worlds share. An evicted peer
keeps its record (reputation, last round) so that when it speaks again it is welcomed back
instead of being treated as a stranger.

Partial views: with ``view_size > 0`` a node knows at most that many peers, refreshed by peer
exchange in heartbeats (a CYCLON-like random view). That keeps per-node state and heartbeat
traffic O(view) instead of O(N), which is what lets 10,000 nodes exist at all.
"""

from __future__ import annotations

import bisect
import ipaddress
import random
from dataclasses import dataclass, field
from functools import lru_cache

from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.messages import Heartbeat
from swarm_tune.runtime.protocol.picks import pick, pick_one
from swarm_tune.runtime.protocol.tensors import Sketch

UNKNOWN_SUBNET = "unknown"


@lru_cache(maxsize=1 << 16)
def subnet_of(address: str, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> str:
    """The network a peer's address belongs to, as the key of the subnet cap.

    ``address`` is an IP or a multiaddr (a dial hint). Unparseable or missing addresses all
    share one bucket: an attacker must not be able to escape the cap by hiding its address.
    """
    if address.startswith("/"):  # a multiaddr dial hint: its /ip4/ or /ip6/ component
        parts = address.split("/")
        hosts = [parts[i + 1] for i in range(len(parts) - 1) if parts[i] in ("ip4", "ip6")]
        address = hosts[0] if hosts else ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return UNKNOWN_SUBNET
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(slots=True)
class PeerRecord:
    peer: str
    address: str
    subnet: str
    last_seen: float
    live: bool = True
    round: int = -1
    dataset_size: int = 0
    digest: str = ""
    sketch: Sketch = field(default=(), repr=False)
    sketch_round: int = -1
    dial: str = ""  # the dial hint the peer declared (or was passed on with); "" = none
    param_round: int = -1  # the early parameter round it last announced (-1: none)


class PeerTable:
    """Peer records keyed by verified peer id; every listing is sorted by id.

    The live list is kept sorted incrementally (bisect) rather than re-sorted on demand:
    the simulator calls it on every heartbeat and contribution of thousands of nodes.
    """

    def __init__(self, config: ProtocolConfig, self_id: str) -> None:
        self._cfg = config
        self._self = self_id
        #: peer -> record. Read-only outside this class: the per-message path of a flat
        #: round (N^2 lookups) reads it directly, without a ``get`` call per message.
        self.by_id: dict[str, PeerRecord] = {}
        self._live: list[str] = []
        self._dead: set[str] = set()

    def __contains__(self, peer: object) -> bool:
        return peer in self.by_id

    def get(self, peer: str) -> PeerRecord | None:
        return self.by_id.get(peer)

    def records(self) -> list[PeerRecord]:
        return [self.by_id[p] for p in sorted(self.by_id)]

    def live_records(self) -> list[PeerRecord]:
        """Records of live peers, sorted by id."""
        peers = self.by_id
        return [peers[p] for p in self._live]

    def live_peers(self) -> list[str]:
        """Sorted ids of live peers. Do not mutate: it is the table's own list."""
        return self._live

    def connect(self, peer: str, address: str, now: float, rng: random.Random) -> bool:
        """Record a peer we can reach; True if it is new or coming back (a rejoin)."""
        if peer == self._self:
            return False
        rec = self.by_id.get(peer)
        if rec is None:
            if not self._make_room(rng):
                return False
            self._add(peer, address, now)
            return True
        if address:
            rec.address = address
            rec.subnet = subnet_of(address, self._cfg.ipv4_prefix, self._cfg.ipv6_prefix)
        return self._mark_alive(rec, now)

    def heard_from(self, peer: str, now: float, rng: random.Random, address: str = "") -> bool:
        """Any message proves liveness; True if this admitted a new peer (at ``address``)
        or brought an evicted one back."""
        rec = self.by_id.get(peer)
        if rec is None:
            return self.connect(peer, address, now, rng)
        return self._mark_alive(rec, now)

    def apply_heartbeat(self, peer: str, hb: Heartbeat) -> None:
        rec = self.by_id.get(peer)
        if rec is None:
            return
        rec.round, rec.dataset_size = hb.round, hb.dataset_size
        rec.digest, rec.sketch, rec.sketch_round = hb.digest, hb.sketch, hb.sketch_round
        rec.param_round = hb.param_round
        if hb.dial:
            rec.dial = hb.dial

    def learn(self, peers: tuple[tuple[str, str], ...], now: float, rng: random.Random) -> None:
        """Peer exchange (partial views only): fill free or dead slots with advertised peers,
        and swap at most one live member per call so the view keeps mixing without churning
        away the peers we are actually working with."""
        swapped = False
        for peer, address in peers:
            if peer == self._self or peer in self.by_id:
                continue
            full = 0 < self._cfg.view_size <= len(self.by_id)
            if full and not self._dead:
                if swapped:
                    continue
                swapped = True
            if self._make_room(rng):
                # Unconfirmed: it must speak before its eviction timer expires.
                self._add(peer, address, now)

    def mark_gone(self, peer: str) -> bool:
        rec = self.by_id.get(peer)
        if rec is None or not rec.live:
            return False
        rec.live = False
        self._live.pop(bisect.bisect_left(self._live, peer))
        self._dead.add(peer)
        return True

    def expire(self, now: float) -> list[str]:
        """Evict live peers silent for longer than the eviction timeout."""
        cutoff = now - self._cfg.eviction_timeout
        gone = [p for p in self._live if self.by_id[p].last_seen < cutoff]
        for p in gone:
            self.mark_gone(p)
        return gone

    def sample_known(self, k: int, rng: random.Random) -> tuple[tuple[str, str], ...]:
        """Up to ``k`` live peers as (id, dial hint or address) for peer exchange."""
        live = self._live
        picked = pick(rng, live, k)
        return tuple((p, self.by_id[p].dial or self.by_id[p].address) for p in picked)

    def dead_peers(self) -> list[str]:
        """Evicted peers still on record, sorted by id."""
        return sorted(self._dead)

    def _add(self, peer: str, address: str, now: float) -> None:
        subnet = subnet_of(address, self._cfg.ipv4_prefix, self._cfg.ipv6_prefix)
        self.by_id[peer] = PeerRecord(peer, address, subnet, now)
        bisect.insort(self._live, peer)

    def _mark_alive(self, rec: PeerRecord, now: float) -> bool:
        if now > rec.last_seen:  # not max(): this runs for every message a node receives
            rec.last_seen = now
        if rec.live:
            return False
        rec.live = True
        self._dead.discard(rec.peer)
        bisect.insort(self._live, rec.peer)
        return True

    def _make_room(self, rng: random.Random) -> bool:
        limit = self._cfg.view_size
        if limit == 0 or len(self.by_id) < limit:
            return True
        # Forget a dead record first; otherwise replace a random live one (random views mix
        # well and cannot be steered by whoever talks most).
        if self._dead:
            victim = min(self._dead)
            self._dead.discard(victim)
        else:
            victim = pick_one(rng, self._live)
            self._live.pop(bisect.bisect_left(self._live, victim))
        del self.by_id[victim]
        return True
