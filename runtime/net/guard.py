"""Stream isolation: nothing a peer writes on any protocol can end the process.

Why at the network's common stream handler and not per protocol: py-libp2p runs every
inbound stream's handler (ours, and the library's own: identify, identify-push, ping, Kad,
relay) as a task in the connection's nursery; an exception that escapes one handler takes
the connection's task group, the swarm and the node's root nursery with it. The issue's
reproducer was two bytes (``01 ff``) on ``/meshsub/1.1.0``: pubsub's protobuf DecodeError
propagated and the process exited without a Goodbye or a final checkpoint. Wrapping each
handler registered today would miss the ones a library service registers later; wrapping
the one entry point every inbound stream passes through covers them all, present and future.

An exception from a handler resets that stream (the peer learns nothing else), is counted by
protocol, and costs the authenticated peer reputation through the core. Cancellation
(``trio.Cancelled`` is a BaseException) passes through untouched.

py-libp2p's own request/response handlers (identify, identify-push, ping, Kad) catch bad
input themselves and answer it by resetting the stream, so no exception reaches us. To make
those attacks visible too, :func:`watch_resets` hands them the stream through a thin proxy
that counts such resets as ``handler_reset:<protocol>``. Counted only, never blamed: a library
resets for reasons we cannot judge. (Not for relay / DCUtR: they keep streams in tables keyed
by identity, which a proxy would break.)

**ping** echoes every 32 bytes it reads, as fast as they come: one stream carrying 64 KiB of
garbage made the node send 2,048 encrypted echoes, the largest single item in a profile of the
victim under the hostile suite's ``streams`` attack (46 of its ~350 extra samples). An honest
pinger waits for each echo and pings about once a second or less (py-libp2p's DHT pings once
to test a peer's liveness), so each peer gets ``PING_BURST`` echoes and then
``PING_PER_S`` a second; past that the stream is reset and ``ping_flood`` counted (only: the
protocol sets no rate, so it is no proof of a hostile peer). The budget is the **peer's**, not
the stream's: a budget per stream let one peer multiply it by opening streams (a yamux stream
costs one frame; py-libp2p takes 2 ping streams per peer at once, but any number in turn).
Measured from outside: 16 streams one after another, 64 pings each, got 8 echoes apiece, 128
in all; now 8 in all. The table of budgets is bounded (``MAX_PING_PEERS``, least recently used
forgotten); a peer id that comes back after being forgotten needs a new connection, which the
per-source admission (``conn_limit.py``) rate-limits.

Two of those handlers never reset on garbage, so they get a closer look:

* **identify-push** logs a parse error and closes the stream normally. The proxy keeps the
  bytes the handler read (one length-prefixed message, at most 1 MiB) and, once the handler
  is done, judges them the way the handler parsed them: a bad varint, a length over the
  library's cap or a message that is not an ``Identify`` protobuf is ``identify_push_malformed``
  and costs the peer reputation (nothing but a broken or hostile peer sends it); a message cut
  short (the peer closed, reset or stalled past the handler's 10 s) is
  ``identify_push_truncated``, counted only (a connection can die mid-push).
* **identify** is a request the remote makes by opening the stream and reading; the handler
  never reads, so bytes written to it were invisible. After the handler has answered and
  closed its side we wait up to ``IDENTIFY_QUIET_S`` for the peer's side: an honest requester
  writes nothing (it reads and closes, or just leaves), so any byte is ``identify_written``
  and costs reputation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.identity.identify.pb.identify_pb2 import Identify

from swarm_tune.runtime.net.conn_limit import BucketTable
from swarm_tune.runtime.net.refusals import Refusals
from swarm_tune.runtime.protocol.reasons import RejectReason

log = logging.getLogger(__name__)

Handler = Callable[[INetStream], Awaitable[None]]


def isolate_streams(host: IHost, refusals: Refusals) -> None:
    """Route every inbound stream of ``host`` through :func:`guarded`."""
    inner: Handler = host._swarm_stream_handler  # type: ignore[attr-defined]
    host.get_network().set_stream_handler(guarded(inner, refusals))


IDENTIFY = "/ipfs/id/1.0.0"
IDENTIFY_PUSH = "/ipfs/id/push/1.0.0"
PING = "/ipfs/ping/1.0.0"
WATCHED = (IDENTIFY, IDENTIFY_PUSH, PING, "/ipfs/kad/1.0.0")
#: Echoes one ping stream gets at once, then per second (see the module docstring).
PING_BURST = 8
PING_PER_S = 1.0
#: Peers whose ping budget is remembered at once (see the module docstring).
MAX_PING_PEERS = 1024
#: How long an answered identify stream is watched for bytes the requester should not send.
IDENTIFY_QUIET_S = 2.0
#: py-libp2p's cap on one identify-push message (``read_length_prefixed_protobuf``).
PUSH_MAX = 1024 * 1024
_VARINT_MAX = 10


def watch_resets(host: IHost, refusals: Refusals) -> None:
    """Count the resets of py-libp2p's request/response handlers and the garbage that
    identify / identify-push swallow (call after services registered their handlers)."""
    handlers = host.get_mux().handlers
    pings = BucketTable(PING_PER_S, PING_BURST, MAX_PING_PEERS)
    for proto in WATCHED:
        handler = handlers.get(proto)  # type: ignore[call-overload]
        if handler is not None:
            host.set_stream_handler(proto, _watching(proto, handler, refusals, pings))  # type: ignore[arg-type]


def _watching(proto: str, handler: Handler, refusals: Refusals, pings: BucketTable) -> Handler:
    async def watched(stream: INetStream) -> None:
        proxy = _Watched(stream, proto, refusals, pings if proto == PING else None)
        await handler(proxy)  # type: ignore[arg-type]
        if proto == IDENTIFY_PUSH:
            _judge_push(bytes(proxy.consumed), _peer_of(stream), refusals)
        elif proto == IDENTIFY:
            await _watch_quiet(stream, refusals)

    return watched


def push_verdict(data: bytes) -> str | None:
    """What is wrong with the bytes an identify-push handler read: None (a well-formed
    message), ``"malformed"`` or ``"truncated"``."""
    length = used = 0
    while True:
        if used == _VARINT_MAX:
            return "malformed"  # longer than 64 bits
        if used == len(data):
            return "truncated"
        byte = data[used]
        length |= (byte & 0x7F) << (7 * used)
        used += 1
        if not byte & 0x80:
            break
    if length > PUSH_MAX:
        return "malformed"
    body = data[used:]
    if len(body) < length:
        return "truncated"
    try:
        Identify().ParseFromString(body[:length])
    except Exception:  # protobuf's DecodeError, or anything its C parser raises
        return "malformed"
    return None


def _judge_push(data: bytes, peer: str | None, refusals: Refusals) -> None:
    verdict = push_verdict(data)
    if verdict == "malformed":
        refusals.count("identify_push_malformed", peer, RejectReason.MALFORMED)
    elif verdict == "truncated":
        refusals.count("identify_push_truncated", peer)


async def _watch_quiet(stream: INetStream, refusals: Refusals) -> None:
    """After an identify answer: any byte from the requester is a protocol violation."""
    data = b""
    with trio.move_on_after(IDENTIFY_QUIET_S), contextlib.suppress(Exception):
        data = await stream.read(1)  # b"" or an exception: the peer closed or reset
    if data:
        refusals.count("identify_written", _peer_of(stream), RejectReason.MALFORMED)
        with contextlib.suppress(Exception):
            await stream.reset()


def guarded(inner: Handler, refusals: Refusals) -> Handler:
    async def handler(stream: INetStream) -> None:
        try:
            await inner(stream)
        except Exception as exc:  # any peer-triggered failure: drop the stream, not the node
            peer = _peer_of(stream)
            proto = str(stream.get_protocol() or "negotiation")
            log.info("stream from %s on %s failed: %r", peer, proto, exc)
            refusals.count(f"stream_error:{proto}", peer, RejectReason.MALFORMED)
            with contextlib.suppress(Exception):
                await stream.reset()

    return handler


def _peer_of(stream: INetStream) -> str | None:
    try:
        return str(stream.muxed_conn.peer_id)
    except Exception:  # introspection only
        return None


class PingFlood(Exception):
    """A ping stream outran its echo budget (``PING_BURST`` / ``PING_PER_S``)."""


class _Watched:
    """An inbound stream as a library handler sees it: all delegated, resets counted, the
    bytes it read kept (up to one identify-push message) for a verdict afterwards, and a
    ping handler's echoes paced by the peer's budget (``echoes``, ping streams only)."""

    def __init__(
        self,
        stream: INetStream,
        proto: str,
        refusals: Refusals,
        echoes: BucketTable | None = None,
    ) -> None:
        self._stream = stream
        self._proto = proto
        self._refusals = refusals
        self._keep = PUSH_MAX + _VARINT_MAX if proto == IDENTIFY_PUSH else 0
        self.consumed = bytearray()
        self._echoes = echoes
        self._flooded = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        data = await self._stream.read(n)
        if len(self.consumed) < self._keep:
            self.consumed += data[: self._keep - len(self.consumed)]
        return data

    async def write(self, data: bytes) -> None:
        peer = _peer_of(self._stream) if self._echoes is not None else None
        if self._echoes is not None and not self._echoes.take(peer or "", trio.current_time()):
            self._flooded = True
            self._refusals.count("ping_flood", peer)
            raise PingFlood(self._proto)  # the handler resets the stream
        await self._stream.write(data)

    async def reset(self) -> None:
        if not self._flooded:  # a flood is counted as such, not as a library reset
            self._refusals.count(f"handler_reset:{self._proto}")
        await self._stream.reset()
