"""Chunking an encoded message into bounded frames.

Why: py-libp2p's Noise transport carries at most 65,535 bytes per frame, and a receiver
must never be made to buffer an unbounded amount for one read. A message is cut into
frames of at most `max_frame_bytes` (60 KiB by default, header included)::

    off size
      0    4  magic b"SWRF"
      4    2  frame format version (1)
      6    2  flags (0)
      8   16  message id (signature prefix of the message: unique per signed message)
     24    4  chunk index
     28    4  chunk count
     32    8  total message length
     40    4  chunk size (payload bytes of every frame but the last)
     44    …  chunk bytes

Every frame repeats (count, total, chunk size) so the receiver can reserve and validate
from whichever frame arrives first, and frames are canonical: chunk i holds exactly bytes
[i * chunk_size, min((i + 1) * chunk_size, total)) of the message. Frames are not signed;
the reassembled message is, and its sender must match the authenticated transport peer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from swarm_tune.runtime.wire.codec import message_id
from swarm_tune.runtime.wire.errors import (
    BadMagic,
    InconsistentChunks,
    Malformed,
    Oversized,
    Truncated,
    UnsupportedVersion,
)
from swarm_tune.runtime.wire.limits import DEFAULT_FRAME_BYTES, WireLimits

__all__ = [
    "FRAME_HEADER_BYTES",
    "FRAME_MAGIC",
    "Frame",
    "iter_frames",
    "parse_frame",
    "split_frames",
]

FRAME_MAGIC: Final = b"SWRF"
FRAME_VERSION: Final = 1
_HDR = struct.Struct("<4sHH16sIIQI")
FRAME_HEADER_BYTES: Final = _HDR.size
_DEFAULT_LIMITS: Final = WireLimits()
_NO_SIZE_LIMITS: Final = WireLimits(max_message_bytes=1 << 62, max_header_bytes=1 << 32)


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed frame; `data` is a view into the frame buffer."""

    msg_id: bytes
    index: int
    count: int
    total: int
    chunk_size: int
    data: memoryview

    @property
    def offset(self) -> int:
        return self.index * self.chunk_size


def iter_frames(
    message: bytes | bytearray | memoryview, max_frame_bytes: int = DEFAULT_FRAME_BYTES
) -> Iterator[bytes]:
    """Yield the frames of an encoded message one at a time.

    Preferred by senders: only one 60 KiB frame is alive at a time (and its memory is
    reused for the next), instead of a second full copy of the message.
    """
    chunk = max_frame_bytes - FRAME_HEADER_BYTES
    if chunk <= 0:
        raise ValueError("max_frame_bytes too small for the frame header")
    mv = memoryview(message)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    # Any well-formed message gets an id; size limits are the receiver's business.
    mid = message_id(mv, _NO_SIZE_LIMITS)
    total = len(mv)
    count = -(-total // chunk)
    if count >= 1 << 32:
        raise ValueError("message too large to frame")
    for i in range(count):
        yield (
            _HDR.pack(FRAME_MAGIC, FRAME_VERSION, 0, mid, i, count, total, chunk)
            + mv[i * chunk : (i + 1) * chunk]
        )


def split_frames(
    message: bytes | bytearray | memoryview, max_frame_bytes: int = DEFAULT_FRAME_BYTES
) -> list[bytes]:
    """Cut an encoded message (from `encode`) into frames of at most `max_frame_bytes`."""
    return list(iter_frames(message, max_frame_bytes))


def parse_frame(
    frame: bytes | bytearray | memoryview, limits: WireLimits = _DEFAULT_LIMITS
) -> Frame:
    """Parse and self-check one frame (consistency with its siblings is the reassembler's)."""
    mv = memoryview(frame)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    n = len(mv)
    if n < len(FRAME_MAGIC):
        raise Truncated() if FRAME_MAGIC.startswith(bytes(mv)) else BadMagic()
    if bytes(mv[:4]) != FRAME_MAGIC:
        raise BadMagic()
    if n < FRAME_HEADER_BYTES:
        raise Truncated()
    if n > limits.max_frame_bytes:
        raise Oversized("frame_too_large")
    _, version, flags, mid, index, count, total, chunk_size = _HDR.unpack_from(mv, 0)
    if version != FRAME_VERSION:
        raise UnsupportedVersion()
    if flags:
        raise Malformed("reserved_bits")
    if total > limits.max_message_bytes:
        raise Oversized("message_too_large")
    if total == 0 or count == 0 or chunk_size == 0:
        raise InconsistentChunks("empty")
    if chunk_size > limits.max_frame_bytes - FRAME_HEADER_BYTES:
        raise InconsistentChunks("chunk_size")
    if count != -(-total // chunk_size):
        raise InconsistentChunks("count_total")
    if count > 1 and chunk_size < limits.min_chunk_bytes:
        raise InconsistentChunks("chunk_size")
    if index >= count:
        raise InconsistentChunks("index")
    expected = min(chunk_size, total - index * chunk_size)
    if n - FRAME_HEADER_BYTES != expected:
        raise InconsistentChunks("chunk_length")
    return Frame(mid, index, count, total, chunk_size, mv[FRAME_HEADER_BYTES:])
