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

import numpy as np

# A free buffer is reused for a message of at least this share of its size (pieces of one
# update differ by a few bytes; a 124 MB buffer is not tied up by a 2 MB message).
MIN_FILL = 0.75
MAX_LENT = 64  # more views out at once than a node ever sends: some were never given back


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
            fits = [a for a in self._free if n <= a.nbytes and n >= MIN_FILL * a.nbytes]
            if fits:
                arr = min(fits, key=lambda a: a.nbytes)
                self._free.remove(arr)
                self.reused += 1
            else:
                arr = np.empty(n, dtype=np.uint8)  # numpy asks for transparent huge pages
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
