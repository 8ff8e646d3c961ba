"""TimerService on trio's real clock: order, replacement, cancellation, re-arming."""

from __future__ import annotations

import pytest
import trio

from swarm_tune.runtime.net.timers import TimerService
from swarm_tune.runtime.protocol import TimerKey


@pytest.mark.trio
async def test_timers_fire_in_order_replace_and_cancel() -> None:
    fired: list[tuple[str, float]] = []
    done = trio.Event()

    def fire(key: TimerKey) -> None:
        fired.append((key.name, trio.current_time()))
        if key.name == "last":
            done.set()
        if key.name == "a":  # a callback may arm another timer
            svc.set(TimerKey("chained"), trio.current_time() + 0.01)

    svc = TimerService(fire)
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(svc.run)
        svc.set(TimerKey("b"), t0 + 0.10)
        svc.set(TimerKey("a"), t0 + 0.05)
        svc.set(TimerKey("gone"), t0 + 0.02)
        svc.cancel(TimerKey("gone"))
        svc.set(TimerKey("moved"), t0 + 0.03)
        svc.set(TimerKey("moved"), t0 + 0.12)  # replaces the earlier deadline
        svc.set(TimerKey("last"), t0 + 0.15)
        with trio.fail_after(5):
            await done.wait()
        n.cancel_scope.cancel()
    names = [name for name, _ in fired]
    assert names == ["a", "chained", "b", "moved", "last"]
    deadlines = {"a": 0.05, "chained": 0.06, "b": 0.10, "moved": 0.12, "last": 0.15}
    for name, at in fired:
        assert at >= t0 + deadlines[name] - 1e-6  # never early
    assert len(svc) == 0
