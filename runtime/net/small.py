"""Control plane over direct streams: small messages (heartbeats, votes) with an ack.

Why a stream per message and not pubsub: pubsub fans out and, in py-libp2p, drops when a
subscriber lags; a heartbeat to one peer wants one authenticated hop and a yes/no answer.
Why a fresh stream per message and not a long-lived one: yamux streams are cheap, a fresh
stream has no framing state a hostile peer can desynchronise, and it makes each message
independently cancellable. The frame is ``u32 length | bytes`` with the length checked
against ``max_small_size`` before any read; the receiver answers one ``0x00`` byte after
the message is queued in ``NetNode.incoming``.
"""

from __future__ import annotations

import contextlib
import logging
import struct

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from swarm_tune.runtime.net.bulk import Deliver, remote_ip_of
from swarm_tune.runtime.net.config import NetConfig
from swarm_tune.runtime.net.errors import NotConnected, SendError, SendRejected, SendTimeout
from swarm_tune.runtime.net.events import Incoming
from swarm_tune.runtime.net.framing import read_exactly
from swarm_tune.runtime.net.host import open_stream
from swarm_tune.runtime.net.refusals import Refusals
from swarm_tune.runtime.protocol.reasons import RejectReason

log = logging.getLogger(__name__)

SMALL_PROTOCOL = TProtocol("/swarm-tune/small/1.0.0")
_LEN = struct.Struct(">I")
ACK_OK = b"\x00"
ACK_TOO_LARGE = b"\x01"


class SmallPlane:
    def __init__(
        self, host: IHost, config: NetConfig, deliver: Deliver, refusals: Refusals
    ) -> None:
        self._host = host
        self._cfg = config
        self._deliver = deliver
        self._refusals = refusals

    async def handle(self, stream: INetStream) -> None:
        """libp2p stream handler for ``SMALL_PROTOCOL``; never raises."""
        peer_id = str(stream.muxed_conn.peer_id)
        timeout = self._cfg.control_timeout
        try:
            (n,) = _LEN.unpack(await read_exactly(stream, _LEN.size, timeout))
            if n > self._cfg.max_small_size:
                self._refusals.count("small_too_large", peer_id, RejectReason.OVERSIZED)
                await stream.write(ACK_TOO_LARGE)
                await _quiet_reset(stream)
                return
            data = await read_exactly(stream, n, timeout)
            await self._deliver(Incoming(peer_id, remote_ip_of(stream) or "", data))
            await stream.write(ACK_OK)
            await stream.close()
        except trio.TooSlowError:
            self._refusals.count("small_timeout")
            await _quiet_reset(stream)
        except Exception as exc:  # cut short or reset: a lost connection looks the same
            self._refusals.count("small_truncated")
            log.info("small message from %s dropped: %s", peer_id, exc)
            await _quiet_reset(stream)

    async def send(self, peer_id: str, data: bytes) -> None:
        if len(data) > self._cfg.max_small_size:
            raise SendRejected(f"message of {len(data)} bytes exceeds max_small_size")
        try:
            peer = ID.from_base58(peer_id)
        except Exception as exc:
            raise SendError(f"invalid peer id {peer_id!r}") from exc
        stream: INetStream | None = None
        try:
            with trio.fail_after(self._cfg.control_timeout):
                stream = await open_stream(self._host, peer, SMALL_PROTOCOL)
                await stream.write(_LEN.pack(len(data)) + data)
                ack = await read_exactly(stream, 1, self._cfg.control_timeout)
        except trio.TooSlowError:
            raise SendTimeout(f"small message to {peer_id} timed out") from None
        except NotConnected:
            self._refusals.count("send_not_connected")
            raise
        except Exception as exc:
            raise SendError(f"small message to {peer_id} failed: {exc}") from exc
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()
        if ack != ACK_OK:
            raise SendRejected("receiver refused the small message")


async def _quiet_reset(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()
