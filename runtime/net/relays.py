"""Relay slots a node behind a NAT keeps, and the relayed addresses it tells peers.

Why a loop of our own and not only py-libp2p's refresher: a circuit relay v2 reservation lives
as long as the connection to the relay (the relay forgets it when that connection closes), and
the library's refresher only renews slots before they expire, it never notices a relay that
restarted or a connection that dropped. So every ``interval`` the node checks each configured
relay and, when it is not connected (or holds no slot), connects and reserves again. Relays
are configured infrastructure, like bootstrap peers: dialling them is the operator's decision,
not a discovery one.

Why the relayed address is what peers are told (``on_change``): a node that needs a relay is
one nobody can dial directly, so its own listen address would only cost every peer a failed
dial. Peers that learn the relayed address dial ``/p2p-circuit`` (``NetNode.connect``), and
with DCUtR on both sides the library then tries to add a direct connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from swarm_tune.runtime.net.errors import NetError
from swarm_tune.runtime.net.node import NetNode

log = logging.getLogger(__name__)


def relay_peer(addr: str) -> str:
    """The relay's peer id: the last ``/p2p/`` component of its (direct) multiaddr."""
    return addr.rsplit("/p2p/", 1)[-1]


async def keep_relay_slots(
    net: NetNode,
    relays: Sequence[str],
    interval: float,
    on_change: Callable[[list[str]], None],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hold a slot on every relay in ``relays`` for as long as the node runs.

    Calls ``on_change`` with the relayed addresses held (in the configured order) whenever
    that list changes; ``task_status.started()`` after the first attempt on every relay, so a
    node that starts with ``nursery.start`` advertises its relayed address from its first
    message. Never raises for an unreachable or refusing relay: it is logged and retried.
    """
    held: dict[str, str] = {}  # relay multiaddr -> our relayed address through it
    started = False
    while True:
        before = [held[a] for a in relays if a in held]
        connected = set(net.connected_peers())
        async with trio.open_nursery() as nursery:
            for addr in relays:
                if addr in held and relay_peer(addr) in connected:
                    continue
                held.pop(addr, None)
                nursery.start_soon(_reserve, net, addr, held)
        now = [held[a] for a in relays if a in held]
        if now != before:
            on_change(now)
        if not started:
            task_status.started()
            started = True
        await trio.sleep(interval)  # a poll period, not a sync point


async def _reserve(net: NetNode, addr: str, held: dict[str, str]) -> None:
    try:
        held[addr] = await net.reserve_relay(addr)
        log.info("relay.reserved relay=%s address=%s", addr, held[addr])
    except NetError as exc:
        log.warning("relay.reservation_failed relay=%s error=%s", addr, exc)
