"""One-round-trip protocol selection against py-libp2p's own multistream listener."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.protocol_muxer.multiselect import Multiselect
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.utils.varint import encode_delim, encode_uvarint

from swarm_tune.runtime.net.errors import FrameError
from swarm_tune.runtime.net.host import RESET_GRACE_S, open_stream
from swarm_tune.runtime.net.negotiate import ProtocolRefused, select

PROTO = TProtocol("/swarm-tune/small/1.0.0")


class _End:
    """One end of an in-memory byte pipe with the stream calls both sides use; it counts
    the writes and notes whether any came after a read (a second round trip)."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self._s = stream
        self.writes = 0
        self.wrote_after_read = False
        self._read = False
        self.protocol: TProtocol | None = None

    async def write(self, data: bytes) -> None:
        self.writes += 1
        self.wrote_after_read = self.wrote_after_read or self._read
        await self._s.send_all(data)

    async def read(self, n: int | None = None) -> bytes:
        self._read = True
        return bytes(await self._s.receive_some(n))

    def set_protocol(self, protocol: TProtocol) -> None:
        self.protocol = protocol


async def _listen(end: _End, protocols: list[TProtocol]) -> None:
    async def handler(_stream: object) -> None:
        return None

    listener = Multiselect({p: handler for p in protocols})
    await listener.negotiate(MultiselectCommunicator(end))  # type: ignore[arg-type]


@pytest.mark.trio
async def test_the_protocol_is_agreed_in_one_write_and_refusals_and_garbage_are_errors() -> None:
    a, b = trio.testing.memory_stream_pair()
    client, server = _End(a), _End(b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_listen, server, [PROTO])
        with trio.fail_after(10):
            await select(client, PROTO)  # type: ignore[arg-type]
    assert client.protocol == PROTO
    assert client.writes == 1 and not client.wrote_after_read  # one round trip

    a, b = trio.testing.memory_stream_pair()
    client, server = _End(a), _End(b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_listen, server, [TProtocol("/other/1.0.0")])
        with pytest.raises(ProtocolRefused), trio.fail_after(10):
            await select(client, PROTO)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()  # the listener waits for another proposal
    assert client.protocol is None

    # A hostile listener: a wrong header, then a line announced at 1 GB (never buffered).
    for answer in (encode_delim(b"/not-multistream/9"), encode_uvarint(1 << 30)):
        a, b = trio.testing.memory_stream_pair()
        client = _End(a)
        await b.send_all(answer)
        with pytest.raises(FrameError), trio.fail_after(10):
            await select(client, PROTO)  # type: ignore[arg-type]
        assert client.protocol is None


class _StuckReset:
    """A stream whose negotiation write fails and whose reset then waits 30 s: what a reset
    does when its RST frame queues behind a connection a peer stopped reading."""

    def __init__(self) -> None:
        self.reset_started = False

    async def write(self, data: bytes) -> None:
        raise OSError("connection broke under the negotiation")

    async def reset(self) -> None:
        self.reset_started = True
        await trio.sleep(30)


class _OneStreamHost:
    """The host calls ``open_stream`` makes, answered with one given stream (the transport
    boundary: the code under test is open_stream's own failure path)."""

    def __init__(self, stream: _StuckReset) -> None:
        self._stream = stream

    def get_network(self) -> _OneStreamHost:
        return self

    async def new_stream(self, _peer: object) -> _StuckReset:
        return self._stream


@pytest.mark.trio
async def test_a_failed_open_resets_its_stream_but_not_past_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = _StuckReset()
    start = trio.current_time()
    with pytest.raises(OSError, match="broke under"):
        await open_stream(_OneStreamHost(stream), ID(b"peer"), PROTO)  # type: ignore[arg-type]
    assert stream.reset_started
    assert trio.current_time() - start <= RESET_GRACE_S + 0.01  # not the reset's 30 s
