"""Bounded reassembly of framed messages from many peers.

Why it looks like this: reassembly is where a hostile peer can most easily exhaust a
node's memory (announce a 1 GiB message, send one frame, repeat). So:

* **Reserve before allocating.** The first frame of a message declares its total length;
  the full size (plus bookkeeping) is reserved against a per-peer and a global byte cap
  *before* the buffer exists, and the frame is refused with `ReassemblyLimit` if it does
  not fit. Nothing is evicted to make room, so a flood from one peer cannot push out an
  honest peer's half-received update. `buffered_bytes` can never exceed the global cap.
* **Keyed on the authenticated transport peer.** The caller passes the peer id that Noise
  proved, so one peer cannot inject frames into another's message, and after reassembly
  the message's signed sender must equal that peer (`SenderMismatch` otherwise).
* **Deterministic time.** The caller passes ``now`` (monotonic seconds; virtual time in the
  simulator); wire never reads a clock. Incomplete messages are dropped
  `reassembly_timeout` after their first frame.
* **Strict consistency.** Every frame of a message must agree on (count, total, chunk
  size); a duplicate frame must carry identical bytes; any inconsistency discards the whole
  partial message. Frames are written straight into one preallocated buffer (uninitialised
  numpy memory: no zero-fill pass, huge pages, and pages are only touched as data really
  arrives), which is handed to `decode` so tensors are zero-copy views of it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import numpy as np

from swarm_tune.runtime.wire.codec import decode
from swarm_tune.runtime.wire.envelope import Envelope
from swarm_tune.runtime.wire.errors import (
    Expired,
    InconsistentChunks,
    ReassemblyLimit,
    SenderMismatch,
)
from swarm_tune.runtime.wire.framing import parse_frame
from swarm_tune.runtime.wire.limits import WireLimits

__all__ = ["Reassembler"]

#: Bytes charged per partial message on top of its buffers (dict entry, object, keys), so
#: that many tiny partial messages are bounded by the byte caps too.
ENTRY_OVERHEAD: Final = 512
_MAX_DONE: Final = 4096


@dataclass(slots=True)
class _Partial:
    peer: str
    count: int
    total: int
    chunk_size: int
    deadline: float
    reserved: int
    buf: memoryview  # uninitialised numpy-backed; every byte is written before use
    have: bytearray
    received: int = 0


class Reassembler:
    """Collect frames per (transport peer, message id) into messages, within hard caps."""

    def __init__(self, *, expected_run_id: str | None, limits: WireLimits | None = None) -> None:
        self.expected_run_id = expected_run_id
        self.limits = limits or WireLimits()
        self._partials: OrderedDict[tuple[str, bytes], _Partial] = OrderedDict()
        self._peer_bytes: dict[str, int] = {}
        self._peer_count: dict[str, int] = {}
        self._bytes = 0
        # Completed multi-frame ids: late duplicate frames must not start a new partial.
        self._done: OrderedDict[tuple[str, bytes], None] = OrderedDict()

    # -- introspection (metrics, tests) ------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes currently reserved for incomplete messages (never above the global cap)."""
        return self._bytes

    def peer_bytes(self, peer: str) -> int:
        return self._peer_bytes.get(peer, 0)

    @property
    def incomplete(self) -> int:
        return len(self._partials)

    def allocated_bytes(self) -> int:
        """Bytes actually held in partial buffers (always <= `buffered_bytes`)."""
        return sum(len(p.buf) + len(p.have) for p in self._partials.values())

    # -- input ---------------------------------------------------------------------------

    def push(self, peer: str, frame: bytes | bytearray | memoryview, now: float) -> Envelope | None:
        """Feed one frame received from authenticated `peer`; return a message when complete.

        The completed message is decoded and verified (`decode`) and its sender checked
        against `peer`. Raises only `WireError` subclasses for bad input.
        """
        raw = self.push_bytes(peer, frame, now)
        if raw is None:
            return None
        envelope = decode(raw, expected_run_id=self.expected_run_id, limits=self.limits)
        if envelope.sender != peer:
            raise SenderMismatch()
        return envelope

    def push_bytes(
        self, peer: str, frame: bytes | bytearray | memoryview, now: float
    ) -> bytearray | memoryview | None:
        """Like `push` but return the raw reassembled message (not decoded or verified)."""
        expired = self.expire(now)
        f = parse_frame(frame, self.limits)
        key = (peer, f.msg_id)
        if key in expired:
            raise Expired()
        part = self._partials.get(key)
        if part is None:
            if key in self._done:
                return None  # late duplicate of a message already delivered
            if f.count == 1:
                return bytearray(f.data)
            part = self._start(key, f.count, f.total, f.chunk_size, now)
        elif (f.count, f.total, f.chunk_size) != (part.count, part.total, part.chunk_size):
            self._drop(key)
            raise InconsistentChunks("header_mismatch")

        start = f.offset
        end = start + len(f.data)
        if part.have[f.index]:
            if part.buf[start:end] != f.data:
                self._drop(key)
                raise InconsistentChunks("duplicate_differs")
            return None
        part.buf[start:end] = f.data
        part.have[f.index] = 1
        part.received += 1
        if part.received < part.count:
            return None
        self._drop(key)
        self._done[key] = None
        if len(self._done) > _MAX_DONE:
            self._done.popitem(last=False)
        return part.buf

    def expire(self, now: float) -> set[tuple[str, bytes]]:
        """Drop incomplete messages whose deadline is <= `now`; return their keys."""
        dropped: set[tuple[str, bytes]] = set()
        # Insertion order is deadline order while `now` is non-decreasing.
        while self._partials:
            key, part = next(iter(self._partials.items()))
            if part.deadline > now:
                break
            self._drop(key)
            dropped.add(key)
        return dropped

    def drop_peer(self, peer: str) -> None:
        """Forget every incomplete message from `peer` (call on disconnect)."""
        for key in [k for k in self._partials if k[0] == peer]:
            self._drop(key)

    # -- internals -----------------------------------------------------------------------

    def _start(
        self, key: tuple[str, bytes], count: int, total: int, chunk_size: int, now: float
    ) -> _Partial:
        peer = key[0]
        lim = self.limits
        reserve = total + count + ENTRY_OVERHEAD
        if self._peer_count.get(peer, 0) >= lim.max_incomplete_per_peer:
            raise ReassemblyLimit("too_many_incomplete")
        if self._peer_bytes.get(peer, 0) + reserve > lim.max_reassembly_bytes_per_peer:
            raise ReassemblyLimit("peer_bytes")
        if self._bytes + reserve > lim.max_reassembly_bytes_total:
            raise ReassemblyLimit("global_bytes")
        part = _Partial(
            peer=peer,
            count=count,
            total=total,
            chunk_size=chunk_size,
            deadline=now + lim.reassembly_timeout,
            reserved=reserve,
            buf=np.empty(total, dtype=np.uint8).data,
            have=bytearray(count),
        )
        self._partials[key] = part
        self._peer_bytes[peer] = self._peer_bytes.get(peer, 0) + reserve
        self._peer_count[peer] = self._peer_count.get(peer, 0) + 1
        self._bytes += reserve
        return part

    def _drop(self, key: tuple[str, bytes]) -> None:
        part = self._partials.pop(key)
        peer = part.peer
        self._bytes -= part.reserved
        left = self._peer_bytes[peer] - part.reserved
        count = self._peer_count[peer] - 1
        if count:
            self._peer_bytes[peer] = left
            self._peer_count[peer] = count
        else:
            del self._peer_bytes[peer], self._peer_count[peer]
