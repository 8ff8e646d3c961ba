"""Bulk data plane: one large message from A to B, fast, bounded, sealed, confirmed.

Why a direct TCP data channel (measured with ``benchmarks/bench_net.py``, 256 MB,
loopback, 2-core VM): raw trio TCP ~1.1 GB/s; one py-libp2p yamux stream over Noise
~0.155 GB/s (ratio 0.145): the cost is per-byte Python work in Noise framing and yamux
window bookkeeping, which no window or write size removes. The direct path carries the
bytes on a plain TCP connection, sealed with AES-256-GCM under a per-transfer key
(``seal.py``); bench_net prints its ratio to raw TCP (goal >= 0.5).

The protocol (``/swarm-tune/bulk/2.0.0``), always opened by the sender:

1. A → B on an authenticated libp2p stream: ``OFFER(mode, size)``. B checks
   ``size <= max_message_size`` and its transfer slots (``admission.py``) and answers
   ``REPLY(status, data_port, token, key)``: a fresh one-time token and AEAD key that only
   A has seen — they travel inside Noise.
2. DIRECT: A opens TCP to the *same IP* its libp2p connection to B uses, at ``data_port``,
   writes ``token`` then the payload in sealed chunks. B matches the token (single use)
   and the source IP to the offer, which binds the TCP bytes to the peer id authenticated
   on the libp2p stream; the key makes them confidential and tamper-evident. STREAM: the
   bytes follow the reply on the libp2p stream itself (Noise already seals them).
3. B → A on the libp2p stream: ``DONE(OK)`` once the message is in the node's incoming
   queue, or ``DONE(FAILED)``. ``send`` returns only after OK.

Failure is never final on the first path: any failure of a DIRECT attempt (connect
refused, token arrived late and was dropped, tampered chunk, reset) is retried once in
STREAM mode on a fresh stream. BUSY is retried with backoff until the caller's deadline
(slots free up; stalled ones are evicted). A message whose stream could not be opened or
was reset before the receiver accepted the offer is sent again, at most ``SEND_TRIES``
times in all with a short backoff, while the peer stays connected: at N = 8 under load an
open failed now and then while a connection was being replaced, and the lost group piece
held its slice's owner until the group timeout. Only failures before the receiver's OK are
retried: after it the bytes may have arrived, and a second copy would be a replay that
costs the sender reputation. A receiver that resets every stream costs at most
``SEND_TRIES`` offers per message (no payload). Only TOO_LARGE and BAD_REQUEST are
returned to the caller as :class:`SendRejected` at once.

Hostile peers (see ``admission.py`` for slots):
* memory is taken only as bytes arrive, never on an OFFER: the receive buffer's pages
  become memory as chunks are written into it (``landing``), under a node-wide ceiling of
  ``max_inbound_bytes`` actually buffered;
* deadlines follow ``NetConfig``'s documentation: after an ``idle_timeout`` grace the
  sender must keep up ``min_rate`` on average (the byte ``n`` is due by
  ``start + idle_timeout + n / min_rate``) and no single read may wait ``idle_timeout``;
  a dribbler is cut after about ``idle_timeout``, not after ``size / min_rate``;
* every refusal is counted (``refusals.py``); the authenticated peer is blamed (via the
  core) for oversized offers, malformed frames and stalled transfers, never for what
  happens on the unauthenticated data port.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamReset
from libp2p.peer.id import ID

from swarm_tune.runtime.net.admission import (
    Slot,
    SlotTable,
    admit_preauth,
    admit_transfer,
)
from swarm_tune.runtime.net.buffers import LandingPool
from swarm_tune.runtime.net.config import NetConfig
from swarm_tune.runtime.net.errors import (
    FrameError,
    NotConnected,
    SendError,
    SendRejected,
    SendTimeout,
)
from swarm_tune.runtime.net.events import Incoming
from swarm_tune.runtime.net.framing import (
    DONE_LEN,
    KEY_LEN,
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
)
from swarm_tune.runtime.net.host import open_stream
from swarm_tune.runtime.net.refusals import Refusals
from swarm_tune.runtime.net.seal import CHUNK, TAG, Sealer, Tampered, chunk_sizes
from swarm_tune.runtime.protocol.reasons import RejectReason

log = logging.getLogger(__name__)

BULK_PROTOCOL = TProtocol("/swarm-tune/bulk/2.0.0")
STREAM_WRITE_CHUNK = 1 << 20
SOCK_BUF = 4 << 20
BUSY_BACKOFF = 0.1  # first retry after a BUSY answer (s), doubling up to the max
BUSY_BACKOFF_MAX = 1.0
SEND_TRIES = 3  # offers of one message whose stream failed before the receiver accepted it
RETRY_BACKOFF = 0.25  # first wait before such a retry (s), doubling
#: What the reused receive buffers may keep between messages (``buffers.LandingPool``):
#: a 124 MB update's group round at N = 4 holds ~7 received quarter-updates at once.
LANDING_KEEP_BYTES = 1 << 30

Deliver = Callable[[Incoming], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Direct:
    """An accepted DIRECT offer waiting for (then fed by) its token connection."""

    slot: Slot
    expected_ip: str
    key: bytes
    presented: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    data: memoryview | None = None
    receiver: trio.CancelScope = field(default_factory=trio.CancelScope)  # the data task


class _Stalled(Exception):
    """Internal: the sender fell behind the min_rate schedule."""


class _MemoryFull(Exception):
    """Internal: the node-wide ceiling of buffered inbound bytes is reached."""


class _Truncated(Exception):
    """Internal: the sender hung up mid-transfer (a crash looks the same: no blame).
    ``reset``: it reset the stream (gave up) rather than closing it or losing the link."""

    def __init__(self, message: str, *, reset: bool = False) -> None:
        super().__init__(message)
        self.reset = reset


def _reset_by_sender(stream: INetStream) -> bool:
    """Whether a stream whose read ended was reset by the sender, as opposed to closed
    (FIN) or lost with its connection. py-libp2p's yamux drops a reset stream from its
    table before the reader wakes, so the read raises EOF ("Stream closed"), not a reset
    (only a reset that finds bytes still buffered raises one): the flag on the stream is
    what is left (a lost connection sets it on every stream too, hence the connection
    check). Counted apart so that a sender giving up is not read as a broken link."""
    muxed = getattr(stream, "muxed_stream", None)
    conn = getattr(muxed, "conn", None)
    shut = getattr(conn, "event_shutting_down", None)
    gone = shut is not None and shut.is_set()
    return bool(getattr(muxed, "reset_received", False)) and not gone


def landing(size: int, pool: LandingPool | None = None) -> memoryview:
    """The receive buffer of a ``size``-byte message: allocated whole, uninitialised and
    numpy-backed (writable bytes, 16-byte aligned as the codec's _aligned needs, so decoded
    tensors alias it); from ``pool`` (memory an earlier message used, see
    ``buffers.LandingPool``) when one is given.

    Why not a growing bytearray: each append-grown 31 MB piece cost ~7.6 k page faults of
    4 KiB (a bytearray gets no huge pages) and ~3 MB of copies at every realloc; numpy asks
    the kernel for transparent huge pages (measured: 0.074 -> 0.012-0.037 s of system time
    per fresh 124 MB). Only the address range is reserved up front: a page becomes memory
    when the first byte of it is written, i.e. as bytes arrive, so a peer that offers a
    large message and sends nothing still costs nothing (the ceiling on buffered bytes
    counts what was written; a reused buffer is memory the node already held). An address
    range the kernel refuses is a full memory, not a crash."""
    try:
        return pool.take(size) if pool is not None else np.empty(size, dtype=np.uint8).data
    except MemoryError:
        raise _MemoryFull() from None


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
        self._direct: dict[bytes, _Direct] = {}
        self._preauth = SlotTable(config.max_preauth_conns, config.max_preauth_per_ip)
        self._transfers = SlotTable(config.max_inbound_transfers, config.max_transfers_per_peer)
        # Never more kept than the node may buffer in flight: the two together bound it.
        self.landings = LandingPool(min(LANDING_KEEP_BYTES, config.max_inbound_bytes))
        #: Who the core counts as a member of the run (their offers come first, see
        #: ``admission.py``); set by the driver. Until then everyone is, which is the plain
        #: schedule rule for all (a bare plane has no run to be a member of).
        self.is_member: Callable[[str], bool] = lambda _peer: True
        #: Inbound payload bytes buffered right now (grows as bytes arrive).
        self.buffered = 0
        self.data_port: int | None = None

    @property
    def idle(self) -> bool:
        """No transfer, token or buffered byte held (tests poll this after an attack)."""
        return not self._direct and not len(self._transfers) and self.buffered == 0

    # ------------------------------------------------------------ receiver: data port

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
            try:
                ip = str(conn.socket.getpeername()[0])
                token = await self._read_token(conn, ip)
            except (OSError, trio.BrokenResourceError):
                self._refusals.count("data_dropped")
                return
            if token is None:
                return
            direct = self._direct.pop(token, None)  # single use, matched or not
            if direct is None:
                self._refusals.count("data_bad_token")
                return
            if ip != direct.expected_ip:
                self._refusals.count("data_wrong_ip")
                direct.done.set()
                return
            direct.presented.set()
            try:
                with direct.receiver:
                    direct.data = await self._receive_sealed(conn, direct)
            except Tampered:
                self._refusals.count("data_tampered")  # the path's fault, not the peer's
            except (FrameError, OSError, trio.BrokenResourceError) as exc:
                self._refusals.count("data_dropped")
                log.info("direct data connection dropped: %s", exc)
            except _Stalled:
                self._stalled(direct.slot)
            except _MemoryFull:
                self._refusals.count("bulk_memory_full")
            finally:
                direct.done.set()

    async def _read_token(self, conn: trio.SocketStream, ip: str) -> bytes | None:
        slot = Slot(ip, trio.current_time())
        if admit_preauth(self._preauth, slot) is not None:
            self._refusals.count("data_preauth_evicted")
        token = bytearray(TOKEN_LEN)
        got = 0
        try:
            with trio.move_on_after(self._cfg.preauth_timeout) as scope:
                slot.scopes.append(scope)
                while got < TOKEN_LEN:
                    n = await conn.socket.recv_into(memoryview(token)[got:])
                    if n == 0:
                        self._refusals.count("data_preauth_closed")
                        return None
                    got += n
        finally:
            self._preauth.remove(slot)
        if got < TOKEN_LEN:
            if not slot.evicted:
                self._refusals.count("data_preauth_timeout")
            return None
        return bytes(token)

    async def _receive_sealed(self, conn: trio.SocketStream, direct: _Direct) -> memoryview:
        sock = conn.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
        opener = Sealer(direct.key)
        sealed = bytearray(CHUNK + TAG)
        buf = landing(direct.slot.size, self._pool_for(direct.slot))
        got = 0
        try:
            for index, n in enumerate(chunk_sizes(direct.slot.size)):
                view = memoryview(sealed)[: n + TAG]
                await self._fill(direct.slot, view, sock.recv_into, counts=n)
                self._take(n)
                got += n
                opener.open_into(index, view, buf[got - n : got])  # straight to its place
                direct.slot.got += n
        except BaseException:
            self._shrink(got)
            raise
        return buf

    # ----------------------------------------------------------- receiver: offers

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
        except _Truncated as exc:
            # Counted only: an honest sender that gives up (to retry) resets the same way.
            self._refusals.count("bulk_reset" if exc.reset else "bulk_truncated")
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
            await self._answer(stream, Status.TOO_LARGE)
            return
        if offer.mode is Mode.DIRECT and (self.data_port is None or not ip):
            await self._answer(stream, Status.NO_DIRECT)
            return
        now = trio.current_time()
        slot = Slot(peer_id, now, offer.size, priority=self.is_member(peer_id))
        admitted, evicted = admit_transfer(
            self._transfers, slot, now, cfg.stall_grace, cfg.min_rate, cfg.max_stranger_transfers
        )
        if evicted is not None:
            self._stalled(evicted)
        if not admitted:
            self._refusals.count("bulk_busy")
            await self._answer(stream, Status.BUSY)
            return
        data: memoryview | None = None
        try:
            with trio.CancelScope() as scope:
                slot.scopes.append(scope)
                if offer.mode is Mode.DIRECT:
                    data = await self._await_direct(stream, slot, ip)
                else:
                    await stream.write(Reply(Status.OK).encode())
                    data = await self._receive_stream(stream, slot)
            if data is None:
                await self._answer(stream, Status.FAILED)
                return
            try:
                await self._deliver(Incoming(peer_id, ip, data))
            finally:
                self._shrink(len(data))
            del data
        finally:
            self._transfers.remove(slot)
        await self._answer(stream, Status.OK)

    async def _answer(self, stream: INetStream, status: Status) -> None:
        if status is Status.OK or status is Status.FAILED:
            await stream.write(encode_done(status))
        else:
            await stream.write(Reply(status).encode())
        await stream.close()

    async def _await_direct(self, stream: INetStream, slot: Slot, ip: str) -> memoryview | None:
        token = secrets.token_bytes(TOKEN_LEN)
        direct = _Direct(slot, ip, secrets.token_bytes(KEY_LEN))
        self._direct[token] = direct
        try:
            assert self.data_port is not None
            await stream.write(Reply(Status.OK, self.data_port, token, direct.key).encode())
            async with trio.open_nursery() as nursery:
                # The sender writes nothing more on this stream in DIRECT mode, so any
                # read completing means it gave up (e.g. to retry in STREAM mode).
                nursery.start_soon(_cancel_on_read, stream, nursery.cancel_scope)
                # A late token is fine: it is due with the first bytes, i.e. within the
                # schedule's idle_timeout grace, not within a separate short clock.
                with trio.move_on_at(self._due(slot, 0)):
                    await direct.presented.wait()
                if direct.presented.is_set():
                    await direct.done.wait()  # the data task keeps to the schedule
                else:
                    self._stalled(slot)
                nursery.cancel_scope.cancel()
        except BaseException:
            # Evicted or cancelled: stop the data task and drop what it may have buffered.
            direct.receiver.cancel()
            if direct.data is not None:
                self._shrink(len(direct.data))
                direct.data = None
            raise
        finally:
            self._direct.pop(token, None)
        return direct.data

    async def _receive_stream(self, stream: INetStream, slot: Slot) -> memoryview | None:
        try:
            buf = landing(slot.size, self._pool_for(slot))
            while slot.got < slot.size:
                want = min(STREAM_WRITE_CHUNK, slot.size - slot.got)
                with trio.fail_at(self._due(slot, want)), trio.fail_after(self._cfg.idle_timeout):
                    try:
                        chunk = await stream.read(want)
                    except (EOFError, StreamReset):  # a reset usually reads as EOF, see below
                        chunk = b""
                if not chunk:
                    raise _Truncated(
                        f"stream ended after {slot.got} of {slot.size} bytes",
                        reset=_reset_by_sender(stream),
                    )
                if len(chunk) > want:  # a muxer bug must not overrun the announced size
                    raise FrameError("stream returned more bytes than requested")
                self._take(len(chunk))
                buf[slot.got : slot.got + len(chunk)] = chunk
                slot.got += len(chunk)
        except trio.TooSlowError:
            self._shrink(slot.got)
            self._stalled(slot)
            return None
        except _MemoryFull:
            self._shrink(slot.got)
            self._refusals.count("bulk_memory_full")
            return None
        except BaseException:
            self._shrink(slot.got)
            raise
        return buf

    # ------------------------------------------------------------ receiver: helpers

    def _pool_for(self, slot: Slot) -> LandingPool | None:
        """Members' transfers land in reused memory; a stranger's in fresh memory that goes
        back to the OS, so it cannot leave the pool holding sizes nobody else uses."""
        return self.landings if slot.priority else None

    def _due(self, slot: Slot, upto: int) -> float:
        """When byte ``slot.got + upto`` must have arrived (see the module docstring)."""
        return slot.started + self._cfg.idle_timeout + (slot.got + upto) / self._cfg.min_rate

    async def _fill(
        self,
        slot: Slot,
        target: memoryview,
        recv_into: Callable[[memoryview, int], Awaitable[int]],
        *,
        counts: int,
    ) -> None:
        """Fill ``target`` (sealed chunk) on the schedule of ``counts`` payload bytes."""
        got, n = 0, len(target)
        try:
            with trio.fail_at(self._due(slot, counts)):
                while got < n:
                    with trio.fail_after(self._cfg.idle_timeout):
                        k = await recv_into(target[got:], n - got)
                    if k == 0:
                        raise FrameError(f"data connection closed after {slot.got} bytes")
                    got += k
        except trio.TooSlowError:
            raise _Stalled() from None

    def _take(self, n: int) -> None:
        """Count ``n`` bytes about to be written into a landing buffer against the
        node-wide ceiling (physical memory follows the bytes written, see ``landing``)."""
        if self.buffered + n > self._cfg.max_inbound_bytes:
            raise _MemoryFull()
        self.buffered += n

    def _shrink(self, n: int) -> None:
        self.buffered -= n

    def _stalled(self, slot: Slot) -> None:
        """A transfer fell behind (or was evicted for it): count, and blame the peer."""
        self._refusals.count("bulk_stalled", slot.key, RejectReason.STALLED)

    # -------------------------------------------------------------------- sender side

    async def send(self, peer_id: str, data: bytes | bytearray | memoryview) -> None:
        """Deliver ``data`` to ``peer_id``; returns once the receiver confirmed it."""
        try:
            peer = ID.from_base58(peer_id)
        except Exception as exc:
            raise SendError(f"invalid peer id {peer_id!r}") from exc
        view = memoryview(data).cast("B")
        backoff, tries = BUSY_BACKOFF, 1
        while True:
            try:
                await self._send_any(peer, view)
                return
            except SendRejected as exc:
                if exc.reason != Status.BUSY.name:
                    raise
            except _Unaccepted as exc:
                # Nothing was delivered (see the module docstring); a lost peer is
                # NotConnected at the next open and is not retried.
                if tries >= SEND_TRIES:
                    raise exc.error from None
                self._refusals.count("send_open_retry")
                log.info("bulk offer to %s failed (%s); retrying", peer, exc.error)
                await trio.sleep(RETRY_BACKOFF * 2 ** (tries - 1))
                tries += 1
                continue
            # BUSY is transient by definition (slots free up, stalled transfers are evicted
            # after stall_grace): retry with backoff until the caller's deadline.
            self._refusals.count("send_busy_retry")
            await trio.sleep(backoff)
            backoff = min(2 * backoff, BUSY_BACKOFF_MAX)

    async def _send_any(self, peer: ID, view: memoryview) -> None:
        maybe_delivered = False
        if self._cfg.direct_tcp and not _is_relayed(self._host, peer):
            try:
                await self._send_once(peer, view, Mode.DIRECT)
                return
            except (SendRejected, NotConnected):
                raise  # the receiver said no / no connection: the other path is no better
            except (SendError, _FallBack, _Unaccepted) as exc:
                # A SendError came after the receiver's OK: the payload may have landed with
                # only its DONE lost, so nothing of this message may be offered again.
                maybe_delivered = isinstance(exc, SendError)
                self._refusals.count("send_direct_fallback")
                log.info("direct transfer to %s failed (%s); using the libp2p stream", peer, exc)
        try:
            await self._send_once(peer, view, Mode.STREAM)
        except _Unaccepted as exc:
            if maybe_delivered:  # a second copy would be the receiver's replay, counted on us
                raise exc.error from None
            raise

    async def _send_once(self, peer: ID, view: memoryview, mode: Mode) -> None:
        cfg = self._cfg
        size = len(view)
        try:
            with trio.fail_after(cfg.control_timeout):
                stream = await open_stream(self._host, peer, BULK_PROTOCOL)
        except trio.TooSlowError:
            raise _Unaccepted(SendTimeout(f"opening a bulk stream to {peer} timed out")) from None
        except NotConnected:
            self._refusals.count("send_not_connected")
            raise
        except Exception as exc:
            raise _Unaccepted(SendError(f"cannot open a bulk stream to {peer}: {exc}")) from exc
        ok = False
        try:
            try:
                with trio.fail_after(cfg.control_timeout):
                    await stream.write(Offer(mode, size).encode())
                    raw = await read_exactly(stream, REPLY_LEN, cfg.control_timeout)
            except trio.TooSlowError:
                raise _Unaccepted(SendTimeout(f"no answer to a bulk offer to {peer}")) from None
            except Exception as exc:  # reset or closed before the receiver answered
                raise _Unaccepted(SendError(f"bulk offer to {peer} failed: {exc}")) from exc
            reply = Reply.decode(raw)
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
        except (SendError, _FallBack, _Unaccepted):
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
        sealer = Sealer(reply.key)
        out = bytearray(CHUNK + TAG)
        async with conn:
            conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            try:
                await conn.send_all(reply.token)
                off = 0
                for index, n in enumerate(chunk_sizes(len(view))):
                    with memoryview(out) as whole:
                        sealer.seal_into(index, view[off : off + n], whole[: n + TAG])
                        await conn.send_all(whole[: n + TAG])
                    off += n
            except (OSError, trio.BrokenResourceError) as exc:
                # The receiver hung up (gave up on a late token, tampered chunk, ...):
                # its DONE on the authenticated stream says which; read it there.
                log.info("direct leg to %s:%s broke: %s", ip, reply.port, exc)


class _FallBack(Exception):
    """Internal: the DIRECT attempt cannot work; retry in STREAM mode."""


class _Unaccepted(Exception):
    """Internal: the stream failed before the receiver accepted the offer, so nothing was
    delivered and the message may be offered again; ``error`` is what the caller gets."""

    def __init__(self, error: SendError) -> None:
        super().__init__(str(error))
        self.error = error


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
