"""Goodput of the network driver vs raw TCP loopback, measured in one run.

Prints MB/s (1 MB = 10^6 bytes) for:

* ``raw tcp``        — trio sockets, sender ``send_all`` of the whole buffer, receiver
                       ``recv_into`` a preallocated buffer: the ceiling for any Python path;
* ``libp2p stream``  — one py-libp2p yamux stream over Noise, 1 MiB writes;
* ``bulk (stream)``  — ``send_bulk`` forced onto libp2p streams (the relayed-peer fallback);
* ``bulk (direct)``  — ``send_bulk`` as used by default (token + AES-256-GCM sealed TCP),
                       timed until the sender holds the receiver's confirmation;

and the ratio bulk/raw (goal >= 0.5). ``--round`` also times one all-to-all round of
``--nodes`` nodes in this one process, each sending an update of ``--update-mb`` MB to every
other node, next to the lower bound ``total bytes / raw tcp goodput``. All nodes share one
event loop and one core here, so that bound is the single-flow loopback rate, not N NICs.

Usage::

    .venv/bin/python benchmarks/bench_net.py               # 256 MB payload
    .venv/bin/python benchmarks/bench_net.py --round --update-mb 31   # 248/8 scaled
"""

from __future__ import annotations

import argparse
import time

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from swarm_tune.runtime.net import NetConfig, NetNode, open_net_node
from swarm_tune.runtime.net.host import build_host

MB = 1_000_000
MiB = 1 << 20
BENCH_PROTO = TProtocol("/swarm-tune/bench/1.0.0")
GPT2_SMALL_FP16 = 248 * MB  # 124M parameters x 2 bytes


def seed(i: int) -> bytes:
    return bytes([i]) * 32


async def raw_tcp(payload: bytes) -> float:
    n = len(payload)
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = await stream.socket.recv_into(view[got:], min(n - got, 4 * MiB))
            if k == 0:
                break
            got += k
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        t0 = time.perf_counter()
        conn = await trio.open_tcp_stream("127.0.0.1", port)
        async with conn:
            await conn.send_all(payload)
            await done.wait()
        dt = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return n / dt / MB


async def libp2p_stream(payload: bytes) -> float:
    n = len(payload)
    done = trio.Event()
    a, b = build_host(seed(1)), build_host(seed(2))

    async def handler(stream: INetStream) -> None:
        got = 0
        while got < n:
            chunk = await stream.read(MiB)
            if not chunk:
                break
            got += len(chunk)
        done.set()

    b.set_stream_handler(BENCH_PROTO, handler)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with a.run(listen), b.run(listen):
        await a.connect(info_from_p2p_addr(b.get_addrs()[0]))
        view = memoryview(payload)
        t0 = time.perf_counter()
        stream = await a.new_stream(b.get_id(), [BENCH_PROTO])
        for i in range(0, n, MiB):
            await stream.write(bytes(view[i : i + MiB]))
        await done.wait()
        dt = time.perf_counter() - t0
        await stream.close()
    return n / dt / MB


async def bulk(payload: bytes, direct: bool) -> float:
    cfg = NetConfig(direct_tcp=direct)
    async with open_net_node(seed(3), config=cfg) as a, open_net_node(seed(4), config=cfg) as b:
        await a.connect(b.multiaddrs[0])
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                msg = await b.incoming.receive()
                assert len(msg.data) == len(payload)

            nursery.start_soon(drain)
            t0 = time.perf_counter()
            await a.send_bulk(b.peer_id, payload)  # returns on the receiver's ack
            dt = time.perf_counter() - t0
    return len(payload) / dt / MB


async def all_to_all_round(nodes: int, update_bytes: int) -> float:
    """Seconds for every node to deliver (confirmed) its update to every other node."""
    cfg = NetConfig(incoming_capacity=nodes)
    update = bytes(update_bytes)  # virtual update: the wire cost is the size, not values
    async with trio.open_nursery() as outer:
        net: list[NetNode] = []
        ready = trio.Event()
        release = trio.Event()

        async def run_node(i: int) -> None:
            async with open_net_node(seed(10 + i), config=cfg) as node:
                net.append(node)
                if len(net) == nodes:
                    ready.set()
                await release.wait()

        for i in range(nodes):
            outer.start_soon(run_node, i)
        await ready.wait()
        for i, x in enumerate(net):
            for y in net[i + 1 :]:
                await x.connect(y.multiaddrs[0])

        async def drain(node: NetNode) -> None:
            for _ in range(nodes - 1):
                msg = await node.incoming.receive()
                assert len(msg.data) == update_bytes

        t0 = time.perf_counter()
        async with trio.open_nursery() as round_nursery:
            for node in net:
                round_nursery.start_soon(drain, node)
                for other in net:
                    if other is not node:
                        round_nursery.start_soon(node.send_bulk, other.peer_id, update)
        dt = time.perf_counter() - t0
        release.set()
    return dt


async def main(args: argparse.Namespace) -> None:
    payload = bytes(args.mb * MB)
    print(f"payload {args.mb} MB, best of {args.repeat}")
    raw = max([await raw_tcp(payload) for _ in range(args.repeat)])
    print(f"raw tcp        : {raw:8.1f} MB/s")
    single = max([await libp2p_stream(payload) for _ in range(1)])
    print(f"libp2p stream  : {single:8.1f} MB/s   ratio {single / raw:.3f}")
    fallback = max([await bulk(payload, direct=False) for _ in range(1)])
    print(f"bulk (stream)  : {fallback:8.1f} MB/s   ratio {fallback / raw:.3f}")
    direct = max([await bulk(payload, direct=True) for _ in range(args.repeat)])
    print(
        f"bulk (direct, AES-256-GCM sealed): {direct:8.1f} MB/s   "
        f"encrypted ratio bulk/raw {direct / raw:.3f} (goal >= 0.5)"
    )
    if args.round:
        size = args.update_mb * MB
        dt = await all_to_all_round(args.nodes, size)
        total = args.nodes * (args.nodes - 1) * size
        bound = total / (raw * MB)
        scale = GPT2_SMALL_FP16 / size
        print(
            f"round          : {args.nodes} nodes x {args.update_mb} MB update "
            f"({total / MB:.0f} MB moved) in {dt:.2f} s; lower bound {bound:.2f} s "
            f"(total / raw); efficiency {bound / dt:.2f}"
        )
        if scale != 1:
            print(
                f"                 scaled x{scale:.1f} to GPT-2-small fp16 (248 MB): "
                f"~{dt * scale:.1f} s vs bound {bound * scale:.1f} s (linear extrapolation)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="payload size in MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--round", action="store_true", help="also time a 6-node round")
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--update-mb", type=int, default=31, help="per-node update (MB)")
    trio.run(main, parser.parse_args())
