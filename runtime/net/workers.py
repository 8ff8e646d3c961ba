"""A few long-lived worker threads for the driver's codec and check work.

Why not ``trio.to_thread.run_sync``: trio starts a new OS thread whenever none of its cached
ones is idle (and retires a cached one after 10 s without work), and ``Thread.start`` blocks
the *event loop's* thread until the new thread has run far enough to say it started. On a
busy box that wait is long: in the N = 8 group benchmark on 2 cores (8 nodes, ~16 runnable
threads) a watcher thread caught the loop thread stuck in ``Thread.start`` for 1.1-2.8 s,
half of all its stalls over 1 s (``/work/notes/issue-13-note.md``, part A). While it waits,
nothing on the node runs: no stream negotiation is answered, no heartbeat acknowledged, no
data read, so peers' control messages time out. Each round's burst (one encode per group
member, decodes and checks of every piece that lands) started up to ~14 such threads.

Here the threads are started once, when the pool is built (before any traffic), and live as
long as the node; at most ``size`` jobs run at once, the rest wait in order. Fewer threads
also means fewer contenders for the GIL and the cores beside the loop thread.

A cancelled caller whose job has not started yet leaves at once and the job is skipped (a
cancelled send or shutdown does not wait behind the whole queue); once a thread has started
the job, the caller waits for it (as with ``to_thread.run_sync``'s default). The job's
exception is re-raised in the caller.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

#: At most this many threads, whatever the core count (the loop thread needs one core too).
MAX_THREADS = 4


class _Job:
    """One submitted call; ``claim`` decides, under a lock, whether a worker runs it or its
    cancelled caller dropped it first."""

    __slots__ = ("_lock", "_state", "deliver", "fn", "token")

    def __init__(
        self,
        fn: Callable[[], Any],
        token: trio.lowlevel.TrioToken,
        deliver: Callable[[outcome.Outcome[Any]], None],
    ) -> None:
        self.fn, self.token, self.deliver = fn, token, deliver
        self._lock = threading.Lock()
        self._state = "queued"

    def claim(self, by: str) -> bool:
        """Move a queued job to ``by`` ("running" or "dropped"); False if it was not queued."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = by
            return True


def default_size() -> int:
    """Worker threads for this machine: its usable cores, at least 1, at most MAX_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


class WorkerPool:
    """``size`` threads, started by :meth:`start` and ended by :meth:`close`;
    ``await pool.run(fn, *args)`` runs one job on one of them."""

    def __init__(self, size: int | None = None, name: str = "swarm-tune-worker") -> None:
        self.size = default_size() if size is None else size
        if self.size < 1:
            raise ValueError(f"a worker pool needs at least one thread (got {self.size})")
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads (before any traffic: this is the only time they start)."""
        if self._threads:
            raise RuntimeError("worker pool already started")
        self._threads = [
            threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            for i in range(self.size)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def thread_ids(self) -> frozenset[int]:
        """Identities of the pool's threads (fixed for its life)."""
        return frozenset(t.ident for t in self._threads if t.ident is not None)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on one of the threads; returns its result or raises its error."""
        if not self._threads:
            raise RuntimeError("worker pool not started (or closed)")
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[Any]) -> None:
            trio.lowlevel.reschedule(task, result)

        await trio.lowlevel.checkpoint_if_cancelled()
        job = _Job(lambda: fn(*args), token, deliver)
        self._jobs.put(job)

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            dropped = job.claim("dropped")
            return trio.lowlevel.Abort.SUCCEEDED if dropped else trio.lowlevel.Abort.FAILED

        value: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return value

    def close(self, timeout: float = 5.0) -> None:
        """End the threads once the jobs queued before this are done, and wait for them
        (each at most ``timeout`` seconds; idempotent). Joined, not left as daemons: a
        thread still alive when the interpreter finalizes is stopped inside whatever C/C++
        code it is in (a node once aborted at exit, "terminate called without an active
        exception", cause not established: this removes our threads from the suspects).
        The driver closes the pool after its nursery ended, so no job is running then."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(timeout)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if not job.claim("running"):
                continue  # its caller was cancelled while it waited
            result = outcome.capture(job.fn)
            # The caller's run may have ended (nobody waits for the result then).
            with contextlib.suppress(trio.RunFinishedError):
                job.token.run_sync_soon(job.deliver, result)
