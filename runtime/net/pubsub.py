"""Pubsub helpers for the control plane (small, loss-tolerant broadcasts).

Why pubsub only for control: py-libp2p's subscription queues are bounded and silently
drop when the consumer lags, and mesh routers (GossipSub) may not forward to every peer
immediately. That is acceptable for periodic heartbeats/announcements that are re-sent
anyway and never acceptable for model updates (those go through ``BulkPlane``).

Sender identity: ``Pubsub`` runs with ``strict_signing=True`` (the default), so every
message carries the origin's signature and ``from_id`` is verified against the key in
that peer id before we see it. We also drop messages whose origin is ourselves (py-libp2p
loops local publishes back) and any message larger than ``max_small_size``.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.peer.id import ID
from libp2p.pubsub.floodsub import PROTOCOL_ID as FLOODSUB_PROTOCOL_ID
from libp2p.pubsub.floodsub import FloodSub
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_PROTOCOL_ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as GOSSIPSUB_PROTOCOL_ID_V11
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub

from swarm_tune.runtime.net.events import Incoming
from swarm_tune.runtime.net.host import peer_ip

log = logging.getLogger(__name__)

Router = GossipSub | FloodSub


def make_router(kind: str) -> Router:
    if kind == "floodsub":
        return FloodSub(protocols=[FLOODSUB_PROTOCOL_ID])
    # Small mesh degrees: runs are tens of peers, and a 1 s heartbeat keeps the mesh
    # fresh under churn without measurable cost at that size.
    return GossipSub(
        protocols=[GOSSIPSUB_PROTOCOL_ID_V11, GOSSIPSUB_PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
    )


def make_pubsub(host: IHost, router: Router) -> Pubsub:
    return Pubsub(host, router, strict_signing=True)


async def pump_subscription(
    host: IHost,
    subscription: ISubscriptionAPI,
    out: trio.MemorySendChannel[Incoming],
    max_size: int,
) -> None:
    """Forward verified messages of one subscription into ``out`` until cancelled.

    ``out`` is written with ``send_nowait``: if the application lags we drop here (and
    log) rather than stall py-libp2p's queue, which would drop anyway, silently.
    """
    me = host.get_id().to_bytes()
    async with out:
        while True:
            msg = await subscription.get()
            if msg.from_id == me or len(msg.data) > max_size:
                continue
            try:
                peer = ID(msg.from_id)
            except Exception:
                continue
            # The origin may be several hops away: then there is no IP to report.
            ip = peer_ip(host, peer)
            try:
                out.send_nowait(Incoming(str(peer), ip, bytes(msg.data)))
            except trio.WouldBlock:
                log.warning("pubsub consumer lagging; dropped a message from %s", peer)
