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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from libp2p.abc import IHost, INetStream

from swarm_tune.runtime.net.refusals import Refusals
from swarm_tune.runtime.protocol.reasons import RejectReason

log = logging.getLogger(__name__)

Handler = Callable[[INetStream], Awaitable[None]]


def isolate_streams(host: IHost, refusals: Refusals) -> None:
    """Route every inbound stream of ``host`` through :func:`guarded`."""
    inner: Handler = host._swarm_stream_handler  # type: ignore[attr-defined]
    host.get_network().set_stream_handler(guarded(inner, refusals))


WATCHED = ("/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", "/ipfs/ping/1.0.0", "/ipfs/kad/1.0.0")


def watch_resets(host: IHost, refusals: Refusals) -> None:
    """Count the resets of py-libp2p's request/response handlers (call after services
    registered theirs)."""
    handlers = host.get_mux().handlers
    for proto in WATCHED:
        handler = handlers.get(proto)  # type: ignore[call-overload]
        if handler is not None:
            host.set_stream_handler(proto, _watching(proto, handler, refusals))  # type: ignore[arg-type]


def _watching(proto: str, handler: Handler, refusals: Refusals) -> Handler:
    async def watched(stream: INetStream) -> None:
        await handler(_Watched(stream, proto, refusals))  # type: ignore[arg-type]

    return watched


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


class _Watched:
    """An inbound stream as a library handler sees it: all delegated, resets counted."""

    def __init__(self, stream: INetStream, proto: str, refusals: Refusals) -> None:
        self._stream = stream
        self._proto = proto
        self._refusals = refusals

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    async def reset(self) -> None:
        self._refusals.count(f"handler_reset:{self._proto}")
        await self._stream.reset()
