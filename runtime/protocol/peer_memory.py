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


def has_room(table: dict[str, V], adding: int, limit: int = TRACKED_PEERS) -> bool:
    """Can ``adding`` more peers be stored without forgetting any? Then a batch (a round
    close: one state per judged peer) may store each by ``table.pop`` and assignment -
    ``remember``'s own steps, less the bound it cannot reach - and read every old value as
    it goes: no peer of the batch can be forgotten before its turn."""
    return len(table) + adding <= limit


def most_recent(log: list[tuple[str, V]], limit: int) -> dict[str, V]:
    """The table that ``remember`` would leave after storing ``log``'s items in order into
    an empty one: the ``limit`` peers stored last, stalest first, each with its last value.

    Why it is the same: ``remember`` only ever forgets the peer stored longest ago, so the
    survivors are the peers with the newest last entries. A node that receives far more
    updates than it keeps (peer exchange: every heartbeat of every peer advertises a few)
    can append to a log and pay for the table only when it reads it."""
    newest: dict[str, V] = {}
    for peer, value in reversed(log):
        if peer not in newest:
            newest[peer] = value
            if len(newest) == limit:
                break
    return dict(reversed(newest.items()))
