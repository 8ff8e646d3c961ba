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
protocol and exception type, and costs the authenticated peer reputation through the core.
Cancellation (``trio.Cancelled`` is a BaseException) passes through untouched.
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
