"""A burst of control-lane arrivals as one entry in SimPy's event queue, not one per message.

Why: a flat round at 1,000 nodes sends ~1,000,000 messages within a fraction of a virtual
second; as one SimPy ``Timeout`` each, nearly all of them sit in the event heap at once, so every
push and pop walks ~20 levels of a heap far bigger than the CPU caches (a cProfile of flat
1,000 nodes: heappop ~12 us a call, the largest single cost), and each message also pays for an
event object. A burst (one ``Send`` effect: the same message to many peers) instead keeps its
arrivals in a list sorted by (time, event id) and puts only its next arrival in the heap: the
heap holds one entry per burst in flight, not one per message.

Nothing about *what* happens changes: every arrival keeps the time and the event id
(``env._eid``, drawn at send time exactly as ``simpy.Timeout`` draws it) it would have had as
its own event, and the heap orders entries by (time, priority, id), so arrivals - and everything
else in the world - fire in the same order as before, bit for bit. This leans on SimPy's queue
layout (``env._queue`` entries ``(time, priority, id, event)``; ``Environment.step`` takes an
event's ``callbacks``, calls them, then reads ``_ok``): simpy is pinned in pyproject.toml, and
tests/sim/test_sim_network.py holds a burst to the order of separate events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from heapq import heappush
from operator import itemgetter
from typing import Any

import simpy
from simpy.events import NORMAL

Arrival = tuple[float, int, Any]  # (time, SimPy event id, the delivery's value)


class Burst:
    """Arrivals of one burst; SimPy sees it as an event that fires once per arrival.

    While an arrival is delivered, ``_value`` is its value: the delivery callback reads it
    like a ``Timeout``'s."""

    __slots__ = (
        "_callbacks",
        "_deliver",
        "_items",
        "_next",
        "_ok",
        "_queue",
        "_value",
        "callbacks",
    )

    def __init__(
        self,
        env: simpy.Environment,
        items: list[Arrival],
        deliver: Callable[[Any], None],
    ) -> None:
        # By time alone, stably: every caller draws the ids as it appends, so they ascend in
        # list order and a stable sort is the (time, id) order, without tuple comparisons.
        items.sort(key=itemgetter(0))
        self._queue: list[Any] = env._queue  # private: see the module docstring
        self._items = items
        self._next = 0
        self._deliver = deliver
        self._ok = True
        self._value: Any = None
        self.callbacks: list[Callable[[Any], None]] | None = None
        # One list for every arrival (SimPy takes ``callbacks`` away before it calls them, so
        # each arrival puts it back). A bound method: a reference cycle only until the last
        # arrival, which breaks it, so nothing is left for the cyclic GC.
        self._callbacks: list[Callable[[Any], None]] | None = [self._fire]
        self._push()

    @property
    def value(self) -> Any:
        """The arrival being delivered (``simpy.Event.value``'s meaning)."""
        return self._value

    def _push(self) -> None:
        at, eid, value = self._items[self._next]
        self._value = value
        self.callbacks = self._callbacks
        heappush(self._queue, (at, NORMAL, eid, self))

    def _fire(self, _event: object) -> None:
        self._deliver(self)
        self._next += 1
        if self._next < len(self._items):
            self._push()
        else:
            self._items = []
            self._callbacks = None


def event_ids(env: simpy.Environment) -> Iterator[int]:
    """The ids SimPy gives the events it schedules, in order: ``next`` of it is the next
    event's (and consumes it, as scheduling that event would)."""
    return env._eid  # private: see the module docstring


def next_event_id(env: simpy.Environment) -> int:
    """The id SimPy would give the next event it schedules (and consume it, as it would)."""
    return next(event_ids(env))
