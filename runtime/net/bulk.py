"""Bulk data plane: one large message from A to B, fast, bounded, with confirmed delivery.

Why a direct TCP data channel (measured with ``benchmarks/bench_net.py``, 256 MB, one
run, loopback, 2-core VM): raw trio TCP ~1.1 GB/s; one py-libp2p yamux stream over Noise
~0.155 GB/s (ratio 0.145, 1 MiB writes); parallel yamux streams do not help (4 streams
~0.15 GB/s): the cost is per-byte Python work in Noise framing (64 KiB frames) and yamux
window bookkeeping on one event loop, which no window or write size removes. This module's
direct path measured ~1.04 GB/s (ratio 0.955), timed until the sender holds the ack.
The remaining overhead is the receiver's ``bytearray(size)`` allocation (zero-fill and
page faults); the received buffer is handed over without a further copy.

The protocol (``/swarm-tune/bulk/1.0.0``), always opened by the sender:

1. A → B on an authenticated libp2p stream: ``OFFER(mode, size)``. B checks
   ``size <= max_message_size`` and its inbound memory budget *before* allocating
   anything, and answers ``REPLY(status, data_port, token)`` with a fresh 32-byte random
   token (DIRECT mode) that only A has seen — it travelled inside Noise.
2. DIRECT: A opens plain TCP to the *same IP* its libp2p connection to B uses, at
   ``data_port``, writes ``token`` then exactly ``size`` bytes. B matches the one-time
   token (and the source IP) to the pending offer, which binds the TCP bytes to the peer
   id authenticated on the libp2p stream. STREAM (fallback): the bytes follow the reply on
   the libp2p stream itself.
3. B → A on the libp2p stream: ``DONE(OK)`` once the message is in the node's incoming
   queue. ``send`` returns only then — delivery is confirmed, by the authenticated peer.

Confidentiality and integrity: the direct channel is not encrypted. Integrity is end to
end anyway (SWRM messages are Ed25519-signed over a payload digest and verified by the
receiver); the token prevents a third party from injecting a message in someone else's
name or from occupying memory. Model updates are not secret in this design; a deployment
that needs secrecy sets ``direct_tcp=False`` and pays the libp2p cost.

Fallback: if the peer is reached through a relay, has no data listener, or the direct
connect fails within ``direct_connect_timeout``, the transfer is retried in STREAM mode.

Hostile peers: offers are fixed 13-byte frames; sizes above the cap or the budget are
refused without allocation; every read has an idle timeout and a whole-transfer deadline
(``idle_timeout + size / min_rate``); unauthenticated data connections are capped in
number and must present a token within ``control_timeout``; tokens are single-use.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from swarm_tune.runtime.net.config import NetConfig
from swarm_tune.runtime.net.errors import FrameError, SendError, SendRejected, SendTimeout
from swarm_tune.runtime.net.events import Incoming
from swarm_tune.runtime.net.framing import (
    DONE_LEN,
    OFFER_LEN,
    REPLY_LEN,
    TOKEN_LEN,
    Mode,
    Offer,
    Reply,
    Status,
    decode_done,
    encode_done,
    read_exactly,
    read_into,
)
from swarm_tune.runtime.net.refusals import Refusals
from swarm_tune.runtime.protocol.reasons import RejectReason

log = logging.getLogger(__name__)

BULK_PROTOCOL = TProtocol("/swarm-tune/bulk/1.0.0")
STREAM_WRITE_CHUNK = 1 << 20
SOCK_RECV_CHUNK = 4 << 20
SOCK_BUF = 4 << 20

Deliver = Callable[[Incoming], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    """An accepted DIRECT offer waiting for its TCP connection."""

    size: int
    expected_ip: str
    presented: trio.Event = field(default_factory=trio.Event)  # the token arrived
    done: trio.Event = field(default_factory=trio.Event)
    data: bytearray | None = None


def remote_ip_of(stream: INetStream) -> str | None:
    addr = stream.get_remote_address()
    return None if addr is None else str(addr[0])


def _is_relayed(host: IHost, peer: ID) -> bool:
    try:
        conns = host.get_network().get_connections(peer)
        return any("p2p-circuit" in str(a) for c in conns for a in c.get_transport_addresses())
    except Exception:  # introspection only; assume direct and let the connect decide
        return False


class BulkPlane:
    """Both ends of the bulk protocol for one node. Owned by ``NetNode``."""

    def __init__(
        self, host: IHost, config: NetConfig, deliver: Deliver, refusals: Refusals
    ) -> None:
        self._host = host
        self._cfg = config
        self._deliver = deliver
        self._refusals = refusals
        self._pending: dict[bytes, _Pending] = {}
        self._reserved = 0
        self._reserved_by_peer: dict[str, int] = {}
        self._data_conns = 0
        self.data_port: int | None = None

    # ------------------------------------------------------------------ receiver side

    async def serve_data(
        self,
        bind_host: str,
        port: int,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the direct-data TCP listener; reports the bound port via ``task_status``."""
        listeners = await trio.open_tcp_listeners(port, host=bind_host)
        self.data_port = int(listeners[0].socket.getsockname()[1])
        task_status.started(self.data_port)
        await trio.serve_listeners(self._handle_data_conn, listeners)

    async def _handle_data_conn(self, conn: trio.SocketStream) -> None:
        async with conn:
            if self._data_conns >= self._cfg.max_pending_data_conns:
                self._refusals.count("data_conn_cap")
                return  # closing is the answer; a flood costs one accept each
            self._data_conns += 1
            try:
                await self._receive_direct(conn)
            except trio.TooSlowError:
                self._refusals.count("data_timeout")
            except (FrameError, OSError, trio.BrokenResourceError) as exc:
                self._refusals.count("data_dropped")
                log.info("direct data connection dropped: %s", exc)
            finally:
                self._data_conns -= 1

    async def _receive_direct(self, conn: trio.SocketStream) -> None:
        sock = conn.socket
        token = bytearray(TOKEN_LEN)
        await _sock_fill(
            sock, memoryview(token), self._cfg.control_timeout, self._cfg.control_timeout
        )
        pending = self._pending.pop(bytes(token), None)  # single use, matched or not
        if pending is None:
            self._refusals.count("data_bad_token")
            return
        peer_ip = str(sock.getpeername()[0])
        if peer_ip != pending.expected_ip:
            self._refusals.count("data_wrong_ip")
            pending.done.set()
            raise FrameError(f"token presented from {peer_ip}, expected {pending.expected_ip}")
        pending.presented.set()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
        buf = bytearray(pending.size)
        try:
            await _sock_fill(
                sock,
                memoryview(buf),
                self._cfg.idle_timeout,
                self._cfg.transfer_deadline(pending.size),
            )
            pending.data = buf
        finally:
            pending.done.set()

    async def handle_offer(self, stream: INetStream) -> None:
        """libp2p stream handler for ``BULK_PROTOCOL``; never raises."""
        peer_id = str(stream.muxed_conn.peer_id)
        try:
            await self._serve_offer(stream, peer_id)
        except FrameError as exc:
            self._refusals.count("bulk_bad_frame", peer_id, RejectReason.MALFORMED)
            log.info("bulk offer from %s rejected: %s", peer_id, exc)
            await _quiet_reset(stream)
        except trio.TooSlowError:
            self._refusals.count("bulk_timeout")
            await _quiet_reset(stream)
        except Exception as exc:  # a broken stream must not take the handler down
            self._refusals.count("bulk_broken")
            log.info("bulk offer from %s failed: %s", peer_id, exc)
            await _quiet_reset(stream)

    async def _serve_offer(self, stream: INetStream, peer_id: str) -> None:
        cfg = self._cfg
        offer = Offer.decode(await read_exactly(stream, OFFER_LEN, cfg.control_timeout))
        ip = remote_ip_of(stream) or ""
        if offer.size > cfg.max_message_size:
            self._refusals.count("bulk_too_large", peer_id, RejectReason.OVERSIZED)
            await stream.write(Reply(Status.TOO_LARGE).encode())
            await stream.close()
            return
        if offer.mode is Mode.DIRECT and (self.data_port is None or not ip):
            await stream.write(Reply(Status.NO_DIRECT).encode())
            await stream.close()
            return
        held = self._reserved_by_peer.get(peer_id, 0)
        if (
            self._reserved + offer.size > cfg.max_inbound_bytes
            or held + offer.size > cfg.max_inbound_per_peer
        ):
            self._refusals.count("bulk_busy")
            await stream.write(Reply(Status.BUSY).encode())
            await stream.close()
            return
        self._reserved += offer.size
        self._reserved_by_peer[peer_id] = held + offer.size
        try:
            if offer.mode is Mode.DIRECT:
                data = await self._await_direct(stream, offer.size, ip)
            else:
                await stream.write(Reply(Status.OK).encode())
                buf = bytearray(offer.size)
                await read_into(
                    stream,
                    memoryview(buf),
                    idle_timeout=cfg.idle_timeout,
                    deadline=cfg.transfer_deadline(offer.size),
                )
                data = buf
            if data is None:
                await stream.write(encode_done(Status.FAILED))
                await stream.close()
                return
            await self._deliver(Incoming(peer_id, ip, data))
            del data
        finally:
            self._reserved -= offer.size
            left = self._reserved_by_peer.pop(peer_id) - offer.size
            if left:
                self._reserved_by_peer[peer_id] = left
        await stream.write(encode_done(Status.OK))
        await stream.close()

    async def _await_direct(self, stream: INetStream, size: int, ip: str) -> bytearray | None:
        token = secrets.token_bytes(TOKEN_LEN)
        pending = _Pending(size, ip)
        self._pending[token] = pending
        try:
            assert self.data_port is not None
            await stream.write(Reply(Status.OK, self.data_port, token).encode())
            async with trio.open_nursery() as nursery:
                # The sender writes nothing more on this stream in DIRECT mode, so any
                # read completing means it gave up (e.g. to retry in STREAM mode).
                nursery.start_soon(_cancel_on_read, stream, nursery.cancel_scope)
                # Two clocks: the token must show up quickly (a reservation nobody uses is
                # memory held hostage), then the bytes get the size-scaled deadline.
                with trio.move_on_after(self._cfg.direct_connect_timeout):
                    await pending.presented.wait()
                if pending.presented.is_set():
                    with trio.move_on_after(self._cfg.transfer_deadline(size)):
                        await pending.done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._pending.pop(token, None)
        return pending.data

    # -------------------------------------------------------------------- sender side

    async def send(self, peer_id: str, data: bytes | bytearray | memoryview) -> None:
        """Deliver ``data`` to ``peer_id``; returns once the receiver confirmed it."""
        try:
            peer = ID.from_base58(peer_id)
        except Exception as exc:
            raise SendError(f"invalid peer id {peer_id!r}") from exc
        view = memoryview(data).cast("B")
        if self._cfg.direct_tcp and not _is_relayed(self._host, peer):
            try:
                await self._send_once(peer, view, Mode.DIRECT)
                return
            except _FallBack as exc:
                log.info("direct transfer to %s impossible (%s); using libp2p stream", peer_id, exc)
        await self._send_once(peer, view, Mode.STREAM)

    async def _send_once(self, peer: ID, view: memoryview, mode: Mode) -> None:
        cfg = self._cfg
        size = len(view)
        try:
            with trio.fail_after(cfg.control_timeout):
                stream = await self._host.new_stream(peer, [BULK_PROTOCOL])
        except trio.TooSlowError:
            raise SendTimeout(f"opening a bulk stream to {peer} timed out") from None
        except Exception as exc:
            raise SendError(f"cannot open a bulk stream to {peer}: {exc}") from exc
        ok = False
        try:
            with trio.fail_after(cfg.control_timeout):
                await stream.write(Offer(mode, size).encode())
                reply = Reply.decode(await read_exactly(stream, REPLY_LEN, cfg.control_timeout))
            if reply.status is Status.NO_DIRECT and mode is Mode.DIRECT:
                raise _FallBack("receiver has no direct data listener")
            if reply.status is not Status.OK:
                raise SendRejected(reply.status.name)
            deadline = cfg.transfer_deadline(size) + cfg.control_timeout
            with trio.fail_after(deadline):
                if mode is Mode.DIRECT:
                    await self._push_direct(stream, reply, view)
                else:
                    for i in range(0, size, STREAM_WRITE_CHUNK):
                        await stream.write(bytes(view[i : i + STREAM_WRITE_CHUNK]))
                    status = decode_done(await read_exactly(stream, DONE_LEN, deadline))
                    if status is not Status.OK:
                        raise SendError(f"receiver reported {status.name}")
            ok = True
        except trio.TooSlowError:
            raise SendTimeout(f"bulk transfer of {size} bytes to {peer} timed out") from None
        except (SendError, _FallBack):
            raise
        except Exception as exc:  # stream reset, EOF, muxer errors
            raise SendError(f"bulk transfer to {peer} failed: {exc}") from exc
        finally:
            if ok:
                await _quiet_close(stream)
            else:
                await _quiet_reset(stream)

    async def _push_direct(self, stream: INetStream, reply: Reply, view: memoryview) -> None:
        ip = remote_ip_of(stream)
        if ip is None:
            raise _FallBack("libp2p connection has no IP address")
        try:
            with trio.fail_after(self._cfg.direct_connect_timeout):
                conn = await trio.open_tcp_stream(ip, reply.port)
        except (OSError, trio.TooSlowError) as exc:
            raise _FallBack(f"connect {ip}:{reply.port}: {exc}") from exc
        async with conn:
            conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            await conn.send_all(reply.token)
            await conn.send_all(view)
            # The ack travels on the authenticated stream: the peer id that confirms is
            # the one Noise proved, whatever happened on the plain TCP leg.
            status = decode_done(
                await read_exactly(stream, DONE_LEN, self._cfg.transfer_deadline(len(view)))
            )
        if status is not Status.OK:
            raise SendError(f"receiver reported {status.name} for the direct transfer")


class _FallBack(Exception):
    """Internal: the DIRECT attempt cannot work; retry in STREAM mode."""


async def _sock_fill(
    sock: trio.socket.SocketType, target: memoryview, idle_timeout: float, deadline: float
) -> None:
    got, n = 0, len(target)
    with trio.fail_after(deadline):
        while got < n:
            with trio.fail_after(idle_timeout):
                k = await sock.recv_into(target[got:], min(n - got, SOCK_RECV_CHUNK))
            if k == 0:
                raise FrameError(f"data connection closed after {got} of {n} bytes")
            got += k


async def _cancel_on_read(stream: INetStream, scope: trio.CancelScope) -> None:
    with contextlib.suppress(Exception):
        await stream.read(1)
    scope.cancel()


async def _quiet_close(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.close()


async def _quiet_reset(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()
