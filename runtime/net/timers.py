"""``TimerService``: the protocol's named timers on trio's clock, run by one task.

Why one task and a dict instead of a task per timer: the core re-sets and cancels timers
constantly (every round, every heartbeat); spawning and cancelling tasks for that churns the
scheduler and makes "was it cancelled before it fired?" a race. Here a timer is just an entry
``key -> deadline``; a single task sleeps until the earliest deadline *or* until the set of
timers changes (a ``trio.Event`` it waits on with ``move_on_at``), then fires whatever is due,
in deadline order, ties in the order they were set: the same contract as the SimPy driver
(FIFO among equal times) and the protocol harness, which the effect-contract test
(tests/protocol/test_effect_contract.py) holds them to. Cancelling is deleting the entry, so
a cancelled timer can never fire.
Nothing uses a bare sleep to synchronise; time is ``trio.current_time()``, the same
monotonic clock the driver hands to the core as ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from swarm_tune.runtime.protocol.events import TimerKey


class TimerService:
    def __init__(self, fire: Callable[[TimerKey], None]) -> None:
        self._fire = fire
        self._deadlines: dict[TimerKey, tuple[float, int]] = {}  # key -> (deadline, order set)
        self._seq = 0
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._deadlines)

    def deadline(self, key: TimerKey) -> float | None:
        entry = self._deadlines.get(key)
        return entry[0] if entry is not None else None

    def set(self, key: TimerKey, at: float) -> None:
        """Arm ``key`` for ``at`` (replacing an earlier deadline of the same key)."""
        self._seq += 1
        self._deadlines[key] = (at, self._seq)
        self._changed.set()

    def cancel(self, key: TimerKey) -> None:
        if self._deadlines.pop(key, None) is not None:
            self._changed.set()

    async def run(self) -> None:
        """Fire timers forever (until cancelled)."""
        while True:
            self._changed = trio.Event()
            now = trio.current_time()
            due = sorted((entry, k) for k, entry in self._deadlines.items() if entry[0] <= now)
            for entry, key in due:
                # A callback may have cancelled or re-set a later timer of this batch.
                if self._deadlines.get(key) == entry:
                    del self._deadlines[key]
                    self._fire(key)
            if due:
                await trio.lowlevel.checkpoint()
                continue
            earliest = min((at for at, _ in self._deadlines.values()), default=math.inf)
            with trio.move_on_at(earliest):
                await self._changed.wait()
