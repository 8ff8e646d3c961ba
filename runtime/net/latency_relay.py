"""A userspace TCP relay that adds a fixed one-way delay to every byte: WAN latency in tests.

Why this exists: the kernels these tests run on have no ``sch_netem`` ("Specified qdisc kind
is unknown"), so latency cannot come from ``tc``. ``tbf`` shapes bandwidth and nftables drops
packets, but delay needs a middlebox. This module is that middlebox: it accepts a TCP
connection, opens the matching upstream connection and pumps each direction through a delay
line (a FIFO of ``(due_time, chunk)``): the reader never waits for the writer (up to a bounded
backlog), so the relay adds latency without cutting bandwidth, and a FIFO keeps order.

Why "transparent" routing: a swarm node does not only dial the address it was given. Its bulk
data plane opens a second, plain TCP connection to the *same IP* as its libp2p connection, at
a random port it learns at run time. A relay that forwards one fixed port would silently send
data around the latency. So the relay is meant to sit behind an nftables ``redirect`` that
sends every TCP port of a set of "stand-in" addresses to one listener; the listener recovers
the original destination with ``SO_ORIGINAL_DST`` and asks a :data:`Route` where it goes and
which local address to connect from. With one stand-in address per host (the relay connects
*from* the stand-in of the caller), every connection a host opens to any port of a peer's
stand-in, in either direction, crosses the delay line. This is how ``tests/chaos`` emulates
WAN latency between network namespaces.

What it does not emulate: each TCP leg terminates at the relay (a split-TCP proxy), so the
end hosts' congestion control sees the short leg RTT, not the added delay. Request/response
timing (handshakes, acks, round trips of the protocol) sees the full delay.

Run it standalone (inside the relay's namespace)::

    python -m swarm_tune.runtime.net.latency_relay --port 9999 --delay-ms 25 \\
        --map 10.231.7.1=10.231.7.101 --map 10.231.7.2=10.231.7.102 ...

``--map REAL=STANDIN`` says host REAL is reached through STANDIN (both directions).
It prints ``LATENCY_RELAY_READY port=<p>`` once listening.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

__all__ = [
    "READY_PREFIX",
    "NatTable",
    "RelayStats",
    "Route",
    "original_destination",
    "pump",
    "serve",
]

READY_PREFIX = "LATENCY_RELAY_READY"
CHUNK = 64 * 1024
#: Chunks queued per direction before the reader waits (bounds memory: 64 MiB).
MAX_BACKLOG_CHUNKS = 1024
_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
_SOCKADDR_IN = struct.Struct("!HH4s8x")  # family (host order, but only checked != 0), port, addr

#: (client ip, original destination (ip, port)) -> (local ip to connect from or None,
#: upstream ip, upstream port), or None to refuse the connection.
Route = Callable[[str, tuple[str, int]], tuple[str | None, str, int] | None]


@dataclass(slots=True)
class RelayStats:
    """Counters for tests and logs; written only from the relay's trio thread."""

    connections: int = 0
    refused: int = 0
    bytes_forwarded: int = 0


def original_destination(sock: trio.socket.SocketType) -> tuple[str, int]:
    """The (ip, port) a client dialled before an nftables/iptables ``redirect`` (IPv4)."""
    raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, _SOCKADDR_IN.size)
    _family, port, addr = _SOCKADDR_IN.unpack(raw)
    return socket.inet_ntoa(addr), port


async def pump(
    src: trio.SocketStream,
    dst: trio.SocketStream,
    delay: float,
    stats: RelayStats,
    max_backlog: int = MAX_BACKLOG_CHUNKS,
) -> None:
    """Copy ``src`` to ``dst`` with every chunk held back ``delay`` seconds after it arrived.

    Order is preserved (FIFO, due times never decrease); throughput is not reduced as long
    as fewer than ``max_backlog`` chunks are in flight. EOF is forwarded as a half-close.
    """
    send, recv = trio.open_memory_channel[tuple[float, bytes]](max_backlog)

    async def reader() -> None:
        async with send:
            while True:
                data = await src.receive_some(CHUNK)
                if not data:
                    return
                await send.send((trio.current_time() + delay, data))

    async def writer() -> None:
        async with recv:
            async for due, data in recv:
                await trio.sleep_until(due)
                await dst.send_all(data)
                stats.bytes_forwarded += len(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await dst.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(writer)


async def _connect(bind_ip: str | None, ip: str, port: int) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if bind_ip is not None:
            await sock.bind((bind_ip, 0))
        await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _handle(
    client: trio.SocketStream, route: Route, delay: float, stats: RelayStats, timeout: float
) -> None:
    async with client:
        try:
            peer_ip = str(client.socket.getpeername()[0])
            target = route(peer_ip, original_destination(client.socket))
        except OSError:
            target = None  # not a redirected connection: nothing to forward it to
        if target is None:
            stats.refused += 1
            return
        bind_ip, ip, port = target
        try:
            with trio.fail_after(timeout):
                upstream = await _connect(bind_ip, ip, port)
        except (OSError, trio.TooSlowError):
            stats.refused += 1
            return
        stats.connections += 1
        async with upstream:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, upstream, delay, stats)
                    nursery.start_soon(pump, upstream, client, delay, stats)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # one side reset: closing both is the only sensible answer


async def serve(
    port: int,
    route: Route,
    delay: float,
    *,
    host: str = "0.0.0.0",
    stats: RelayStats | None = None,
    connect_timeout: float = 10.0,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on ``host:port`` and relay each connection where ``route`` says, delayed."""
    if not (math.isfinite(delay) and delay >= 0):
        raise ValueError(f"delay must be a finite number >= 0, got {delay!r}")
    counters = stats if stats is not None else RelayStats()
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(int(listeners[0].socket.getsockname()[1]))

    async def handler(client: trio.SocketStream) -> None:
        await _handle(client, route, delay, counters, connect_timeout)

    await trio.serve_listeners(handler, listeners)


@dataclass(frozen=True, slots=True)
class NatTable:
    """Symmetric stand-in addresses: host ``real`` is seen by everyone as ``standin``.

    A connection from real host A to stand-in S(B) goes to B, from local address S(A), so
    B sees S(A) and its own connections back (any port) return through the relay too.
    """

    standin_of: dict[str, str]  # real ip -> stand-in ip

    def route(self, client_ip: str, dst: tuple[str, int]) -> tuple[str | None, str, int] | None:
        real_of = {s: r for r, s in self.standin_of.items()}
        target = real_of.get(dst[0])
        source = self.standin_of.get(client_ip)
        if target is None or source is None or target == client_ip:
            return None
        return source, target, dst[1]


def _parse_map(items: Sequence[str]) -> NatTable:
    table: dict[str, str] = {}
    for item in items:
        real, sep, standin = item.partition("=")
        if not sep:
            raise SystemExit(f"--map wants REAL=STANDIN, got {item!r}")
        table[socket.inet_ntoa(socket.inet_aton(real))] = socket.inet_ntoa(
            socket.inet_aton(standin)
        )
    return NatTable(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="Listener port (redirect target).")
    parser.add_argument("--delay-ms", type=float, required=True, help="One-way delay per hop.")
    parser.add_argument("--map", action="append", default=[], help="REAL=STANDIN (repeat).")
    args = parser.parse_args(argv)
    table = _parse_map(args.map)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, args.port, table.route, args.delay_ms / 1000.0)
            print(f"{READY_PREFIX} port={port}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
