"""Fixed-layout control frames and bounded reads.

Why fixed-size binary frames instead of protobuf/JSON: the bulk handshake is three tiny
messages whose every field has a hard bound, so a struct layout makes "read exactly N
bytes, then check every field" trivially total — there is no length a peer can inflate,
no nesting, no allocation proportional to anything the peer chose before the size check.
(SWRM's own versioned format lives in ``swarm_tune.runtime.wire``; this is transport glue.)

Every read here is bounded twice: by byte count (the caller says how many bytes it will
accept) and by time (``trio.fail_after``), so a peer that stalls or dribbles gets a
:class:`FrameError`/:class:`SendTimeout`, never a hung task or an unbounded buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import trio

from swarm_tune.runtime.net.errors import FrameError

OFFER_MAGIC = b"SWB2"
TOKEN_LEN = 32
KEY_LEN = 32  # AES-256-GCM key of one direct transfer
READ_CHUNK = 1 << 20


class Mode(IntEnum):
    """How the payload travels after the offer is accepted."""

    DIRECT = 0  # TCP to the receiver's data port: one-time token, then AEAD-sealed chunks
    STREAM = 1  # on the same (Noise/yamux) libp2p stream


class Status(IntEnum):
    OK = 0
    TOO_LARGE = 1
    BUSY = 2
    BAD_REQUEST = 3
    NO_DIRECT = 4  # receiver has no data listener; retry in STREAM mode
    FAILED = 5  # receiver accepted but the payload did not arrive


_OFFER = struct.Struct(">4sBQ")  # magic, mode, size
_REPLY = struct.Struct(">BH32s32s")  # status, data port, token, transfer key
_DONE = struct.Struct(">B")  # status
OFFER_LEN = _OFFER.size
REPLY_LEN = _REPLY.size
DONE_LEN = _DONE.size


@dataclass(frozen=True, slots=True)
class Offer:
    mode: Mode
    size: int

    def encode(self) -> bytes:
        return _OFFER.pack(OFFER_MAGIC, int(self.mode), self.size)

    @classmethod
    def decode(cls, raw: bytes) -> Offer:
        if len(raw) != OFFER_LEN:
            raise FrameError(f"offer must be {OFFER_LEN} bytes, got {len(raw)}")
        magic, mode, size = _OFFER.unpack(raw)
        if magic != OFFER_MAGIC:
            raise FrameError(f"bad offer magic {magic!r}")
        try:
            parsed_mode = Mode(mode)
        except ValueError:
            raise FrameError(f"unknown transfer mode {mode}") from None
        return cls(parsed_mode, size)


@dataclass(frozen=True, slots=True)
class Reply:
    status: Status
    port: int = 0
    token: bytes = bytes(TOKEN_LEN)
    key: bytes = bytes(KEY_LEN)

    def encode(self) -> bytes:
        return _REPLY.pack(int(self.status), self.port, self.token, self.key)

    @classmethod
    def decode(cls, raw: bytes) -> Reply:
        if len(raw) != REPLY_LEN:
            raise FrameError(f"reply must be {REPLY_LEN} bytes, got {len(raw)}")
        status, port, token, key = _REPLY.unpack(raw)
        return cls(_status(status), port, token, key)


def encode_done(status: Status) -> bytes:
    return _DONE.pack(int(status))


def decode_done(raw: bytes) -> Status:
    if len(raw) != DONE_LEN:
        raise FrameError(f"done must be {DONE_LEN} byte, got {len(raw)}")
    return _status(_DONE.unpack(raw)[0])


def _status(value: int) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise FrameError(f"unknown status {value}") from None


class ReadableStream(Protocol):
    """The part of a libp2p ``INetStream`` the bounded readers need."""

    async def read(self, n: int | None = None) -> bytes: ...


async def read_exactly(stream: ReadableStream, n: int, timeout: float) -> bytes:
    """Read exactly ``n`` bytes or raise :class:`FrameError` (EOF) / ``trio.TooSlowError``."""
    buf = bytearray(n)
    await read_into(stream, memoryview(buf), idle_timeout=timeout, deadline=timeout)
    return bytes(buf)


async def read_into(
    stream: ReadableStream, target: memoryview, *, idle_timeout: float, deadline: float
) -> None:
    """Fill ``target`` from ``stream``; each read must progress within ``idle_timeout``,
    the whole fill within ``deadline`` seconds. Never reads past ``len(target)``."""
    got, n = 0, len(target)
    with trio.fail_after(deadline):
        while got < n:
            with trio.fail_after(idle_timeout):
                try:
                    chunk = await stream.read(min(n - got, READ_CHUNK))
                except EOFError:
                    chunk = b""
            if not chunk:
                raise FrameError(f"stream ended after {got} of {n} bytes")
            if len(chunk) > n - got:  # a muxer bug must not overrun the buffer
                raise FrameError("stream returned more bytes than requested")
            target[got : got + len(chunk)] = chunk
            got += len(chunk)
