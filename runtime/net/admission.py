"""Who gets a slot on the data plane: unauthenticated connections and accepted transfers.

Why two tables with eviction rather than caps that refuse: the issue's attack was 200 idle
TCP connections to the data port. Pre-auth connections and authenticated transfers shared
one cap, so the idle ones took every slot and the honest sender's token connection was
reset. A cap that refuses newcomers is a cap an attacker fills first. Here:

* **Pre-auth connections** (TCP accepted, token not yet read) live in their own table, at
  most ``max_preauth_per_ip`` per source IP and ``max_preauth_conns`` in total, each for at
  most ``preauth_timeout`` seconds. A newcomer over a cap *evicts the oldest* connection
  (of its own IP when that IP is at its cap). An honest sender writes its 32-byte token the
  moment it connects and leaves this table within milliseconds; an idle flood can only
  evict itself, whatever its size, at the cost of one accept per connection.
* **Accepted transfers** (an authenticated peer's OFFER was accepted) are capped in number,
  ``max_transfers_per_peer`` per peer and ``max_inbound_transfers`` in total. When the total
  is reached, the transfer furthest behind the ``min_rate`` schedule is evicted, if any is
  behind at all (after a ``stall_grace`` start grace); otherwise the offer gets BUSY (which
  senders retry with backoff).
  Peer ids are free, so a per-peer cap alone would not hold; a stalled transfer is what an
  attacker can produce cheaply, and it is exactly what gets evicted.
* **Members first.** A fresh key costs nothing, so strangers' offers alone could keep the
  table full of transfers still inside their grace, and members' contributions got BUSY
  and waited out backoffs: honest rounds slowed under an offer flood. The driver tells the
  plane who the core counts as a peer of the run (``priority``). Strangers together hold at
  most ``max_stranger_transfers`` slots (a stranger over that cap evicts the stranger
  furthest behind, else BUSY); a member's offer into a full table evicts a stranger
  outright, behind schedule or not, and only competes with members under the old rule.
  A flood of fresh identities can therefore never make a member's offer wait.

Memory is not reserved here at all: buffers grow as bytes arrive (``bulk.py``), under a
ceiling on bytes actually buffered.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import trio


@dataclass(eq=False, slots=True)
class Slot:
    """One admitted connection or transfer; ``scope`` cancels whatever serves it."""

    key: str  # source IP (pre-auth) or peer id (transfer)
    started: float
    size: int = 0
    got: int = 0
    priority: bool = False  # a transfer from a member of the run (see module docstring)
    scopes: list[trio.CancelScope] = field(default_factory=list)
    evicted: bool = False

    def evict(self) -> None:
        self.evicted = True
        for scope in self.scopes:
            scope.cancel()


class SlotTable:
    """Slots keyed by a label (IP or peer id), with per-label and total caps."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self._slots: OrderedDict[int, Slot] = OrderedDict()  # oldest first
        self._by_key: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def count(self, key: str) -> int:
        return self._by_key.get(key, 0)

    def add(self, slot: Slot) -> None:
        self._slots[id(slot)] = slot
        self._by_key[slot.key] = self._by_key.get(slot.key, 0) + 1

    def remove(self, slot: Slot) -> None:
        if self._slots.pop(id(slot), None) is None:
            return
        left = self._by_key[slot.key] - 1
        if left:
            self._by_key[slot.key] = left
        else:
            del self._by_key[slot.key]

    def oldest(self, key: str | None = None) -> Slot | None:
        for slot in self._slots.values():
            if key is None or slot.key == key:
                return slot
        return None

    def slots(self) -> list[Slot]:
        return list(self._slots.values())


def admit_preauth(table: SlotTable, slot: Slot) -> Slot | None:
    """Add ``slot``; return the connection it displaced (already removed), if any."""
    victim = None
    if table.count(slot.key) >= table.per_key:
        victim = table.oldest(slot.key)
    elif len(table) >= table.total:
        victim = table.oldest()
    if victim is not None:
        table.remove(victim)
        victim.evict()
    table.add(slot)
    return victim


def behind_schedule(slot: Slot, now: float, grace: float, min_rate: float) -> float:
    """Bytes ``slot`` lags behind a ``min_rate`` sender that started ``grace`` s late (<=0: on
    time)."""
    return min_rate * (now - slot.started - grace) - slot.got if slot.got < slot.size else 0.0


def admit_transfer(
    table: SlotTable,
    slot: Slot,
    now: float,
    grace: float,
    min_rate: float,
    stranger_cap: int | None = None,
) -> tuple[bool, Slot | None]:
    """Admit an accepted offer: (admitted, evicted transfer). ``stranger_cap`` bounds the
    slots of non-priority transfers together (None: no separate bound)."""
    if table.count(slot.key) >= table.per_key:
        return False, None
    strangers = [s for s in table.slots() if not s.priority]
    victim = None
    if slot.priority:
        if len(table) >= table.total:
            # Any stranger gives way to a member; members compete under the schedule rule.
            victim = (
                max(strangers, key=lambda s: behind_schedule(s, now, grace, min_rate))
                if strangers
                else _most_behind(table.slots(), now, grace, min_rate)
            )
            if victim is None:
                return False, None
    else:
        cap = table.total if stranger_cap is None else stranger_cap
        if len(strangers) >= cap or len(table) >= table.total:
            # A stranger only ever displaces a stranger, and only one behind schedule.
            victim = _most_behind(strangers, now, grace, min_rate) if strangers else None
            if victim is None:
                return False, None
    if victim is not None:
        table.remove(victim)
        victim.evict()
    table.add(slot)
    return True, victim


def _most_behind(slots: list[Slot], now: float, grace: float, min_rate: float) -> Slot | None:
    """The slot furthest behind schedule, if any is behind at all."""
    lag, worst = max(((behind_schedule(s, now, grace, min_rate), s) for s in slots), key=_lag)
    return worst if lag > 0 else None


def _lag(pair: tuple[float, Slot]) -> float:
    return pair[0]
