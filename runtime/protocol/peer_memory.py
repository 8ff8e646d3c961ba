"""Per-peer state with a bound: the peer updated least recently is forgotten first.

Why: a node hears from any number of identities (churn, Sybils, a 10,000-node world), so
whatever it keeps per peer (verdict windows, replay fingerprints, direction scores) must not
grow with them. A dict keeps insertion order, so re-inserting a peer on every update makes
its first key the stalest one - an LRU without a second structure.
"""

from __future__ import annotations

from typing import TypeVar

TRACKED_PEERS = 4096  # peers whose recent state a node keeps, per kind of state

V = TypeVar("V")


def remember(table: dict[str, V], peer: str, value: V, limit: int = TRACKED_PEERS) -> None:
    """Store ``value`` as ``peer``'s newest state; forget the stalest peer beyond ``limit``."""
    table.pop(peer, None)
    table[peer] = value
    if len(table) > limit:
        del table[next(iter(table))]
