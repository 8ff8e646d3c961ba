"""The driver's worker pool: jobs run on the threads started with it, never on new ones."""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing

from swarm_tune.runtime.net.workers import WorkerPool


@pytest.mark.trio
async def test_jobs_run_on_the_pools_own_threads_at_most_size_at_once() -> None:
    pool = WorkerPool(2)
    pool.start()
    started_threads = threading.active_count()
    lock = threading.Lock()
    running, peak, seen = 0, 0, set()

    def job(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            seen.add(threading.get_ident())
        time.sleep(0.02)  # the work itself (a stand-in for hashing a piece)
        with lock:
            running -= 1
        return i * i

    results: dict[int, int] = {}

    async def one(i: int) -> None:
        results[i] = await pool.run(job, i)

    try:
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, i)
        assert results == {i: i * i for i in range(8)}
        assert seen <= pool.thread_ids  # no thread but the pool's own ran a job
        assert peak <= 2
        assert threading.active_count() == started_threads  # nothing started mid-burst

        def boom() -> None:
            raise ValueError("bad piece")

        with pytest.raises(ValueError, match="bad piece"):
            await pool.run(boom)
    finally:
        threads = [t for t in threading.enumerate() if t.ident in pool.thread_ids]
        pool.close()
    assert len(threads) == 2 and not any(t.is_alive() for t in threads)  # joined, not left
    with pytest.raises(RuntimeError):
        await pool.run(job, 0)


@pytest.mark.trio
async def test_a_cancelled_caller_leaves_at_once_and_its_queued_job_never_runs() -> None:
    pool = WorkerPool(1)
    pool.start()
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        release.wait(timeout=2)  # bounded: the old pool made the caller wait for it
        ran.append("blocker")

    def queued() -> None:
        ran.append("queued")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run, blocker)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.05) as scope:
                await pool.run(queued)  # waits behind the blocker: cancelled while queued
            assert scope.cancelled_caught
            release.set()
        assert await pool.run(lambda: "after") == "after"  # the pool still works
        assert ran == ["blocker"]  # the cancelled job was skipped, not run late
    finally:
        release.set()
        pool.close()
