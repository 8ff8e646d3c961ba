"""Reused send buffers: a big message is encoded into memory the process already holds.

Why: every round a group member encodes several large messages (its pieces, its slice,
an audit piece: ~1.25 x the update at N = 4), each into a fresh buffer. A fresh buffer is
fresh pages: the kernel maps, zeroes and later unmaps every one of them (measured here:
0.012-0.074 s of system time per fresh 124 MB, against 0.001 s for a buffer written
again; issue 13's profiles put system time at 0.3-0.8 s of a node's ~1.1 s per round).

A buffer is taken for one encode and given back once every send of that message has
finished (the driver owns both ends; nothing else keeps a reference to a send buffer).
What is kept between rounds is bounded by ``max_bytes``; a buffer that would exceed it is
simply dropped. Every byte of a reused buffer's returned range is overwritten by the
encoder (the codec writes the whole message, alignment gaps included), so nothing of an
earlier message can leak into a later one.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch

# A free buffer is reused for a message of at least this share of its size (pieces of one
# update differ by a few bytes; a 124 MB buffer is not tied up by a 2 MB message).
MIN_FILL = 0.75
MAX_LENT = 64  # more views out at once than a node ever sends: some were never given back
LENT_AVERAGES = 2  # averages between the core's close and the learner's apply, at most
# Fresh buffers get this share of headroom: messages of one kind differ by a few bytes from
# round to round (a piece's JSON header holds the round number and its sums), and one a
# byte larger than the free buffer would miss it (seen: round 1's pieces were 64 bytes
# longer than round 0's, and every one of them took fresh memory, send and receive side).
HEADROOM = 1 / 64
# Inbound messages smaller than this land in fresh memory (numpy's own cache and glibc's
# heap serve those; the fault cost that pooling saves is per page of a big buffer).
LANDING_MIN_BYTES = 1 << 20


class BufferPool:
    """Free uint8 buffers by size; ``take`` and ``give`` may be called from any thread."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._free: list[np.ndarray] = []
        self._lent: dict[int, np.ndarray] = {}  # id(view) -> its array
        self.reused = 0  # takes served from the free list (tests and logs read it)

    @property
    def held(self) -> int:
        """Bytes kept in the free list."""
        with self._lock:
            return sum(a.nbytes for a in self._free)

    def take(self, n: int) -> memoryview:
        """A writable, uninitialised view of ``n`` bytes (a free buffer's, or a new one)."""
        with self._lock:
            arr = _pop_fitting(self._free, n)
            if arr is not None:
                self.reused += 1
            else:
                arr = _fresh(n)
            view = arr[:n].data
            if len(self._lent) >= MAX_LENT:  # views lost to a failed encode: forget them
                self._lent.clear()
            self._lent[id(view)] = arr
        return view

    def give(self, view: memoryview) -> None:
        """Return a view ``take`` lent; the caller must hold no other reference into it."""
        with self._lock:
            arr = self._lent.pop(id(view), None)
            if arr is None:
                return  # not ours (e.g. a small message encoded into a bytearray)
            if sum(a.nbytes for a in self._free) + arr.nbytes <= self.max_bytes:
                self._free.append(arr)


def _pop_fitting(free: list[npt.NDArray[np.uint8]], n: int) -> npt.NDArray[np.uint8] | None:
    """The smallest free buffer that holds ``n`` bytes without wasting more than MIN_FILL
    allows, taken out of ``free``; None if none fits. The caller holds the pool's lock."""
    fits = [i for i, a in enumerate(free) if MIN_FILL * a.nbytes <= n <= a.nbytes]
    if not fits:
        return None
    # By position: list.remove would compare arrays with ==, elementwise.
    return free.pop(min(fits, key=lambda i: free[i].nbytes))


def _fresh(n: int) -> npt.NDArray[np.uint8]:
    """A new buffer for ``n`` bytes and ``HEADROOM`` (numpy asks the kernel for transparent
    huge pages; pages never written are never memory)."""
    return np.empty(n + int(n * HEADROOM), dtype=np.uint8)


class AverageBuffers:
    """Float32 buffers for group rounds' whole averages, lent to the core
    (``ProtocolNode.average_out``) and given back once the learner applied the average.

    Why: the core writes every round's average (the update's size) into a new array, the
    second largest item of an N = 4 round's event-loop profile (np.concatenate faulting in
    124 MB of fresh pages). The learner contract (``Learner.apply_average``) says the
    averaged tensors are not kept after the call, so the next round may write there.
    Only the driver's own thread calls these (the core and the job worker run on it)."""

    def __init__(self, keep: int = 1) -> None:
        self.keep = keep
        self._free: list[npt.NDArray[np.float32]] = []
        self._lent: dict[int, npt.NDArray[np.float32]] = {}  # data pointer -> array
        self.reused = 0

    def take(self, numel: int) -> npt.NDArray[np.float32]:
        fits = [i for i, a in enumerate(self._free) if a.shape == (numel,)]
        if fits:
            arr = self._free.pop(fits[0])
            self.reused += 1
        else:
            arr = np.empty(numel, dtype=np.float32)
        while len(self._lent) >= LENT_AVERAGES:
            # The oldest was never given back (not applied yet, or its tensors were copies,
            # e.g. a bf16 model's): forgetting it only forgoes reusing it.
            del self._lent[next(iter(self._lent))]
        self._lent[arr.ctypes.data] = arr
        return arr

    def give(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """The average in ``tensors`` was applied: its memory is free again. Tensors that
        are not views of a lent buffer (a flat round's average, a fallback) are ignored."""
        if not tensors:
            return
        arr = self._lent.pop(min(t.data_ptr() for t in tensors.values()), None)
        if arr is not None and len(self._free) < self.keep:
            self._free.append(arr)


class LandingPool:
    """Receive buffers of big inbound messages, reused once nothing refers to them.

    Why: every received piece, slice and audit piece of a group round landed in fresh
    memory, and fresh pages cost the kernel a fault and a zero-fill each (measured here:
    ~75 ms of system time per fresh 124 MB, ~1 ms for memory written again). At N = 4 a
    node receives ~7 messages of a quarter update per round: the largest leaf of its
    profile was the AES-GCM open writing into those pages (issue 13).

    Unlike a send buffer, the driver cannot tell when a received one is free: the decoded
    tensors are views of it, and the core keeps them as long as its round needs them. So
    the buffer is handed out behind one exporter: ``take`` returns the buffer of a fresh
    ndarray view ``mid`` (of a kept array ``backing``); every memoryview slice, numpy
    array or torch tensor made from it refers to ``mid`` (a memoryview's managed buffer
    holds its exporter, and numpy's base collapsing stops at a non-array base), so
    ``mid`` dies only when the last user of the memory does, and only then
    (``weakref.finalize``) does ``backing`` go back to the free list. The one way around it
    is ``memoryview.obj`` (which gives ``mid`` to anyone): nothing in this package reads it.
    A buffer comes back whole-written only: the bulk plane delivers a message once every
    byte of its announced size has been written, so nothing of an earlier message shows.

    ``max_bytes`` bounds what the free list keeps, and the longest-kept buffers go first
    when it is over: message sizes drift (and a peer can send sizes nothing else fits), so
    a stale size must not pin the budget for the node's life. The owner pools only its run
    members' transfers (strangers' land in fresh memory that goes back to the OS). A kept
    message holds its whole buffer: up to 1 / MIN_FILL of its size plus headroom. A
    finalizer may run in any thread and at any allocation (a cycle collected), so it only
    appends to a deque; ``take`` moves those to the free list under its lock."""

    def __init__(self, max_bytes: int, min_bytes: int = LANDING_MIN_BYTES) -> None:
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self._lock = threading.Lock()
        self._free: list[npt.NDArray[np.uint8]] = []
        self._returned: deque[npt.NDArray[np.uint8]] = deque()  # appended by finalizers
        self.reused = 0  # takes served from the free list (tests read it)

    @property
    def held(self) -> int:
        """Bytes kept for reuse (free list and buffers given back since the last take)."""
        with self._lock:
            # One C-level copy: a finalizer may append while this sums.
            returned = tuple(self._returned)
            return sum(a.nbytes for a in self._free) + sum(a.nbytes for a in returned)

    def take(self, n: int) -> memoryview:
        """A writable, uninitialised, 16-byte aligned buffer of ``n`` bytes; it is reused
        once every view of it is gone. ``MemoryError`` if the kernel refuses the range."""
        if n < self.min_bytes:
            return np.empty(n, dtype=np.uint8).data
        with self._lock:
            while self._returned:
                self._free.append(self._returned.popleft())  # oldest first, newest last
            kept = sum(a.nbytes for a in self._free)
            while kept > self.max_bytes:
                kept -= self._free.pop(0).nbytes
            backing = _pop_fitting(self._free, n)
            if backing is not None:
                self.reused += 1
            else:
                backing = _fresh(n)
        mid = backing[:n]
        done = weakref.finalize(mid, self._returned.append, backing)
        done.atexit = False
        return mid.data
