"""Bulk data plane over real hosts on loopback: integrity, confirmation, concurrency,
fallback to libp2p streams, and refusal of oversized offers."""

from __future__ import annotations

import contextlib
import hashlib
import random

import numpy as np
import pytest
import trio
from libp2p.abc import INetStream

from swarm_tune.runtime.net import Incoming, NetConfig, SendError, SendRejected, open_net_node
from swarm_tune.runtime.net.bulk import BULK_PROTOCOL, SEND_TRIES
from swarm_tune.runtime.net.node import NetNode

MiB = 1 << 20


def seed(i: int) -> bytes:
    return bytes([i]) * 32


def payload(n: int, salt: int) -> bytes:
    return random.Random(salt).randbytes(n)


@pytest.mark.trio
async def test_bulk_20mb_direct_arrives_intact_and_confirmed() -> None:
    data = payload(20 * MiB, 1)
    async with open_net_node(seed(1)) as a, open_net_node(seed(2)) as b:
        await a.connect(b.multiaddrs[0])
        confirmed = trio.Event()

        async def send() -> None:
            await a.send_bulk(b.peer_id, data)
            confirmed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            with trio.fail_after(30):
                msg = await b.incoming.receive()
        assert confirmed.is_set()
        assert msg.peer_id == a.peer_id and msg.remote_ip == "127.0.0.1"
        assert hashlib.sha256(msg.data).digest() == hashlib.sha256(data).digest()
        assert b.bulk.idle


@pytest.mark.trio
@pytest.mark.parametrize(("sender_direct", "receiver_direct"), [(False, True), (True, False)])
async def test_bulk_over_libp2p_stream_and_fallback(
    sender_direct: bool, receiver_direct: bool
) -> None:
    """Stream mode, chosen by the sender or forced by a receiver without a data port."""
    data = payload(3 * MiB + 17, 2)
    ca, cb = NetConfig(direct_tcp=sender_direct), NetConfig(direct_tcp=receiver_direct)
    async with open_net_node(seed(3), config=ca) as a, open_net_node(seed(4), config=cb) as b:
        await a.connect(b.multiaddrs[0])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_bulk, b.peer_id, data)
            with trio.fail_after(30):
                msg = await b.incoming.receive()
        assert msg.data == data and msg.peer_id == a.peer_id


@pytest.mark.trio
async def test_concurrent_bulk_transfers_many_to_one_and_one_to_many() -> None:
    async with (
        open_net_node(seed(5)) as a,
        open_net_node(seed(6)) as b,
        open_net_node(seed(7)) as c,
    ):
        await a.connect(b.multiaddrs[0])
        await a.connect(c.multiaddrs[0])
        await b.connect(c.multiaddrs[0])
        sent = {
            (a.peer_id, b.peer_id): payload(4 * MiB, 10),
            (a.peer_id, c.peer_id): payload(4 * MiB + 1, 11),
            (b.peer_id, c.peer_id): payload(4 * MiB + 2, 12),
            (a.peer_id, b.peer_id, "2"): payload(MiB, 13),  # two at once on one pair
        }
        nodes = {n.peer_id: n for n in (a, b, c)}
        received: list[tuple[str, Incoming]] = []

        async def drain(node_id: str, count: int) -> None:
            for _ in range(count):
                received.append((node_id, await nodes[node_id].incoming.receive()))

        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, b.peer_id, 2)
                nursery.start_soon(drain, c.peer_id, 2)
                for key, data in sent.items():
                    nursery.start_soon(nodes[key[0]].send_bulk, key[1], data)
        got = sorted((to, m.peer_id, bytes(m.data)) for to, m in received)
        want = sorted((k[1], k[0], d) for k, d in sent.items())
        assert got == want


@pytest.mark.trio
async def test_oversized_offers_are_refused_and_buffered_bytes_are_capped() -> None:
    cfg = NetConfig(max_message_size=2 * MiB, max_inbound_bytes=3 * MiB)
    async with open_net_node(seed(8)) as a, open_net_node(seed(9), config=cfg) as b:
        await a.connect(b.multiaddrs[0])
        with pytest.raises(SendRejected, match="TOO_LARGE"):
            await a.send_bulk(b.peer_id, bytes(2 * MiB + 1))
        assert b.refusals.counts["bulk_too_large"] == 1
    # Ceiling on bytes actually buffered: with a 1-slot incoming queue nobody drains, the
    # 2nd message keeps its 2 MiB buffered while it waits for the queue; a 3rd cannot fit
    # (both paths fail: memory, not the path, is short) and the first two still arrive.
    b_full = NetConfig(max_inbound_bytes=3 * MiB, incoming_capacity=1)
    async with open_net_node(seed(10)) as a, open_net_node(seed(11), config=b_full) as b:
        await a.connect(b.multiaddrs[0])
        first, second = payload(2 * MiB, 3), payload(2 * MiB, 4)
        await a.send_bulk(b.peer_id, first)  # confirmed: it sits in the queue
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_bulk, b.peer_id, second)
            with trio.fail_after(10):
                while b.bulk.buffered < 2 * MiB:
                    await trio.sleep(0.01)  # polling a counter, not synchronising on time
            with pytest.raises(SendError, match="FAILED"):
                await a.send_bulk(b.peer_id, bytes(2 * MiB))
            assert b.refusals.counts["bulk_memory_full"] == 2
            assert (await b.incoming.receive()).data == first
            assert (await b.incoming.receive()).data == second
        assert b.bulk.idle


def test_a_landing_buffer_is_whole_writable_aligned_and_a_refused_one_is_a_full_memory() -> None:
    from swarm_tune.runtime.net import bulk

    buf = bulk.landing(3 * MiB + 5)
    assert len(buf) == 3 * MiB + 5 and not buf.readonly and buf.format == "B"
    assert np.frombuffer(buf, dtype=np.uint8).ctypes.data % 16 == 0  # decode aliases it
    with pytest.raises(bulk._MemoryFull):  # counted as bulk_memory_full by both paths
        bulk.landing(1 << 62)  # an address range no kernel grants: refused, not raised on


def _reset_first(node: NetNode, n: int) -> list[int]:
    """Fault injected at the transport boundary: ``node`` resets the first ``n`` bulk
    streams it is offered (as a connection being torn down under them does), then serves
    the rest with its own handler. Returns the count of streams it was offered."""
    seen = [0]

    async def handler(stream: INetStream) -> None:
        seen[0] += 1
        if seen[0] <= n:
            await stream.reset()
            return
        await node.bulk.handle_offer(stream)

    node.host.set_stream_handler(BULK_PROTOCOL, handler)
    return seen


@pytest.mark.trio
async def test_an_offer_reset_before_it_was_accepted_is_sent_again_a_bounded_number_of_times() -> (
    None
):
    data = payload(MiB + 5, 9)
    async with open_net_node(seed(5)) as a, open_net_node(seed(6)) as b:
        await a.connect(b.multiaddrs[0])
        # DIRECT reset, its STREAM fallback reset: the message is offered again and lands.
        offered = _reset_first(b, 2)
        with trio.fail_after(30):
            await a.send_bulk(b.peer_id, data)
            msg = await b.incoming.receive()
        assert msg.data == data and offered[0] == 3
        assert a.refusals.counts["send_open_retry"] == 1
        # A receiver that resets every stream gets SEND_TRIES offers (two streams each:
        # DIRECT, then STREAM), no payload, and the sender a SendError.
        offered = _reset_first(b, 1 << 30)
        with trio.fail_after(30), pytest.raises(SendError, match="bulk"):
            await a.send_bulk(b.peer_id, data)
        assert offered[0] == 2 * SEND_TRIES
        assert a.refusals.counts["send_open_retry"] == SEND_TRIES
        assert b.bulk.idle and b.incoming.statistics().current_buffer_used == 0


@pytest.mark.trio
async def test_a_message_whose_done_was_lost_after_acceptance_is_never_offered_again() -> None:
    # Faults injected at the receiver's boundary: the first (DIRECT) transfer is delivered
    # but its stream is reset before the DONE (as a connection being replaced does), and
    # the STREAM fallback's stream is reset before it is accepted. The payload may have
    # landed, so the sender gives up: a retry would deliver a second copy, which the
    # receiver counts against the sender as a replay.
    data = payload(MiB + 7, 11)
    async with open_net_node(seed(7)) as a, open_net_node(seed(8)) as b:
        await a.connect(b.multiaddrs[0])
        deliver, delivered, seen = b.bulk._deliver, [0], [0]

        async def deliver_then_break(msg: Incoming) -> None:
            await deliver(msg)
            delivered[0] += 1
            if delivered[0] == 1:
                raise OSError("connection replaced before the DONE")

        b.bulk._deliver = deliver_then_break

        async def handler(stream: INetStream) -> None:
            seen[0] += 1
            if seen[0] == 2:
                await stream.reset()
                return
            with contextlib.suppress(Exception):
                await b.bulk.handle_offer(stream)

        b.host.set_stream_handler(BULK_PROTOCOL, handler)
        with trio.fail_after(30), pytest.raises(SendError):
            await a.send_bulk(b.peer_id, data)
        assert seen[0] == 2 and delivered[0] == 1  # no third offer, no second copy
        assert a.refusals.counts.get("send_open_retry", 0) == 0
        msg = b.incoming.receive_nowait()
        assert msg.data == data
        assert b.incoming.statistics().current_buffer_used == 0
