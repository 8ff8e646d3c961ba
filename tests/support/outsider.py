"""An outsider: a plain py-libp2p client and plain TCP sockets, nothing from this repository.

Why it must not import ``swarm_tune``: a hostile peer is whoever can reach the node, and it
uses whatever libp2p stack it likes. Attacking with the project's own node code would only
send what that code can produce; this client asks the node (identify) which protocol ids it
advertises and writes arbitrary bytes on each of them, with a fresh key per attack.

Usage: ``python outsider.py TARGET_MULTIADDR DATA_PORT ATTACK [ATTACK ...]`` (DATA_PORT 0:
learn it from a DIRECT offer's reply, as any peer can). Each ATTACK is
``NAME[:COUNT][@SOURCE_IP]``, NAME one of ``meshsub`` (the two bytes ``01 ff`` on
/meshsub/1.1.0, the issue's reproducer), ``streams`` (garbage / truncation / oversized length
/ slow input on every advertised id), ``idle`` (hold COUNT plain TCP connections to the data
port open, sending nothing), ``churn`` (COUNT new connections to the libp2p port, each
starting a Noise handshake), ``offers`` (COUNT large bulk offers that never send a byte),
``dribble`` (COUNT accepted offers fed one byte a second) or ``badtoken`` (COUNT wrong 32-byte
tokens a second on the data port). COUNT defaults to ``--count``, SOURCE_IP to ``--bind``.

Several attacks run **at once**, each from its own source address when one is given (on
loopback any 127.0.0.x): the CI suite attacks one node with all of them together instead of
one after another, and separate sources keep each attack inside its own per-IP budgets, as
separate attackers would be. Prints one ``OUTSIDER {json}`` line (``seen``: per attack, what
the node answered), then exits 0. Every step is bounded by a timeout and the random bytes are
seeded. An ``OUTSIDER_START`` line marks the moment set-up (imports, learning the data port or
the protocol list) is over and the attacks begin, so that a measurement window can start there.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
STREAMS_AT_ONCE = 8  # the every-protocol probes in flight together (each a fresh key)
SETTLE = 1.0  # after the hold: a node's answer already on its way still counts
#: With ``--settle-slots N``: after the hold, wait (at most this long) until at most N offers
#: are still held. Below the node's own 30 s idle cut of a stalled offer (NetConfig
#: ``idle_timeout``), so only an eviction can end the wait early, never that cut.
SETTLE_MAX = 10.0


@dataclass
class Attack:
    """One attack of a run: what, how many, from which source address, and what it saw."""

    name: str
    count: int
    source: str
    seen: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def parse(spec: str, count: int, rounds: int, source: str) -> Attack:
        """``meshsub`` and ``streams`` repeat ``rounds`` times unless COUNT says otherwise."""
        rest, _, src = spec.partition("@")
        name, _, n = rest.partition(":")
        default = rounds if name in ("meshsub", "streams") else count
        return Attack(name, int(n) if n else default, src or source)


class Outsider:
    def __init__(
        self,
        target: str,
        data_port: int,
        seed: int,
        hold: float | None,
        size: int,
        settle_slots: int | None = None,
    ) -> None:
        self.target = multiaddr.Multiaddr(target)
        self.info = info_from_p2p_addr(self.target)
        self.ip = str(self.target.value_for_protocol("ip4"))
        self.port = int(self.target.value_for_protocol("tcp"))
        self.data_port = data_port
        self.rng = random.Random(seed)
        self.hold = 20.0 if hold is None else hold  # idle, offers, dribble
        self.badtoken_hold = hold or 0.0  # without --hold: one burst
        self.size = size
        self.protocols: list[str] = []
        self.start = 0.0
        #: Offers (of every offer attack) accepted and not cut yet, and their waits.
        self.settle_slots = settle_slots
        self.held = 0
        self._waits: list[trio.CancelScope] = []
        #: Set once the hold is judged: every offer still held is let go, later ones at once.
        self.settled = trio.Event()

    def begin(self) -> None:
        """The attacks start now; each ends ``hold`` s from here, however long its set-up
        (fresh keys, handshakes) took on a busy box."""
        self.start = trio.current_time()
        print(f"{PREFIX}_START", flush=True)

    @property
    def end(self) -> float:
        return self.start + self.hold

    async def discover_data_port(self, source: str) -> None:
        """Learn the data port the way any peer does: a DIRECT offer's reply carries it."""
        if self.data_port:
            return
        async with self.host() as host:
            s = await self.stream(host, BULK, source)
            with trio.fail_after(10):
                await s.write(OFFER.pack(b"SWB2", 0, 1024))  # DIRECT mode
                reply = await s.read(REPLY_LEN)
            self.data_port = struct.unpack(">H", reply[1:3])[0]
            await s.reset()

    @contextlib.asynccontextmanager
    async def host(self) -> Any:
        """A fresh identity per call: peer ids are free, as for any attacker."""
        host = new_host()
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            yield host

    async def stream(self, host: IHost, proto: str, source: str) -> Any:
        """Connect from ``source`` (py-libp2p's own source-bound dial) and open ``proto``."""
        with trio.fail_after(10):
            network = host.get_network()
            await network.dial_addr(self.info.addrs[0], self.info.peer_id, source=(source, 0))
            return await host.new_stream(self.info.peer_id, [TProtocol(proto)])

    async def write_then_read(
        self, a: Attack, host: IHost, proto: str, chunks: list[bytes], gap: float
    ) -> None:
        """Open ``proto``, write ``chunks`` (``gap`` s apart), read what comes back."""
        try:
            s = await self.stream(host, proto, a.source)
        except Exception as exc:
            a.seen[f"open_failed:{type(exc).__name__}"] += 1
            return
        try:
            with trio.move_on_after(3 + gap * len(chunks)):
                for c in chunks:
                    await s.write(c)
                    if gap:
                        await trio.sleep(gap)
                await s.close()  # half-close: a handler waiting for more sees EOF
                got = await s.read(4096)
                a.seen["answered" if got else "closed"] += 1
                return
            a.seen["no_answer"] += 1
        except Exception as exc:
            a.seen[f"stream:{type(exc).__name__}"] += 1
        finally:
            with contextlib.suppress(Exception):
                await s.reset()

    async def identify(self, source: str) -> list[str]:
        async with self.host() as host:
            s = await self.stream(host, str(IDENTIFY), source)
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

    async def meshsub(self, a: Attack) -> None:
        for _ in range(a.count):
            async with self.host() as host:
                await self.write_then_read(a, host, "/meshsub/1.1.0", [b"\x01\xff"], 0)

    async def streams(self, a: Attack) -> None:
        """Every shape on every advertised protocol, ``a.count`` times, each probe with a
        fresh key; the payloads are drawn up front (seeded), the probes then overlap."""
        r = self.rng
        shapes: dict[str, Callable[[], list[bytes]]] = {
            "garbage": lambda: [r.randbytes(r.randrange(1, 3000))],
            "truncated": lambda: [b"\x0a\xff\xff\x03" + r.randbytes(5)],
            "oversized": lambda: [b"\xff\xff\xff\xff\x0f" + r.randbytes(64), b"\xff" * 65536],
            "varint_bomb": lambda: [b"\xff" * 16],
            "slow": lambda: [bytes([b]) for b in r.randbytes(4)],
        }
        probes = [
            (proto, name, make())
            for _ in range(a.count)
            for proto in self.protocols
            for name, make in shapes.items()
        ]
        limit = trio.CapacityLimiter(STREAMS_AT_ONCE)

        async def probe(proto: str, name: str, chunks: list[bytes]) -> None:
            async with limit, self.host() as host:
                await self.write_then_read(a, host, proto, chunks, 0.4 if name == "slow" else 0)
            a.seen[f"sent:{name}"] += 1

        async with trio.open_nursery() as n:
            for proto, name, chunks in probes:
                n.start_soon(probe, proto, name, chunks)

    async def idle(self, a: Attack) -> None:
        socks = []
        for _ in range(a.count):
            s = socket.socket()
            s.setblocking(False)
            try:
                await trio.to_thread.run_sync(_connect, s, a.source, self.ip, self.data_port)
                socks.append(s)
            except OSError:
                a.seen["connect_refused"] += 1
                s.close()
        a.seen["idle_open"] = len(socks)
        await trio.sleep_until(self.end)
        a.seen["closed_by_node"] = sum(1 for s in socks if _is_closed(s))
        for s in socks:
            s.close()

    async def offers(self, a: Attack) -> None:
        """Accepted offers that never send a payload byte (memory pinned on OFFER alone?)."""
        await self._offers(a, 0.0)

    async def dribble(self, a: Attack) -> None:
        """Accepted offers fed one byte a second (the issue's slowloris on the bulk plane)."""
        await self._offers(a, 1.0)

    async def _offers(self, a: Attack, dribble: float) -> None:
        """``a.count`` offers at once with fresh keys, each held until the node cuts it
        (``offer_cut``) or the hold is judged (``offer_outlasted``: still holding a slot then).
        An offer the node accepts after that (``offer_late``: its set-up outlasted the hold on
        a busy box, and a slot was free) is let go at once: it was never held at the end.

        The node's cut of an offer it evicted reaches us late on a loaded box (seconds, once:
        14 of 8 slots looked held 1 s after the hold). With ``settle_slots`` the end of the
        hold is therefore a condition: wait until at most that many offers are held, at most
        ``SETTLE_MAX``; without it, ``SETTLE``."""
        async with trio.open_nursery() as n:
            n.start_soon(self._settle)
            for _ in range(a.count):
                n.start_soon(self._offer, a, dribble)

    async def _settle(self) -> None:
        await trio.sleep_until(self.end)
        self._check_settled()
        with trio.move_on_at(self._settle_deadline()):
            await self.settled.wait()
        self._let_go()

    def _check_settled(self) -> None:
        """Past the hold with at most ``settle_slots`` offers held: stop waiting for cuts."""
        if self.settle_slots is None or trio.current_time() < self.end:
            return
        if self.held <= self.settle_slots:
            self._let_go()

    def _let_go(self) -> None:
        self.settled.set()
        for scope in self._waits:
            scope.cancel()

    def _settle_deadline(self) -> float:
        return self.end + (SETTLE if self.settle_slots is None else SETTLE_MAX)

    async def _offer(self, a: Attack, dribble: float) -> None:
        try:
            async with self.host() as host:
                s = await self.stream(host, BULK, a.source)
                with trio.fail_after(10):
                    await s.write(OFFER.pack(b"SWB2", 1, self.size))  # STREAM mode
                    reply = await s.read(REPLY_LEN)
                status = reply[0] if reply else -1
                a.seen[f"offer_status:{status}"] += 1
                if status == 0:
                    a.seen[await self._hold(s, dribble)] += 1
                with contextlib.suppress(Exception):
                    await s.reset()
        except Exception as exc:
            a.seen[f"offer:{type(exc).__name__}"] += 1

    async def _hold(self, s: Any, dribble: float) -> str:
        """Hold an accepted offer until the node cuts it or the hold is judged. ``held``
        counts the offers held right now: one we let go is no longer held (the node reads
        our reset as the end of that offer and may accept a later one)."""
        if self.settled.is_set():
            return "offer_late"
        cut = False
        self.held += 1
        with trio.CancelScope() as wait:  # _settle cancels it, by the deadline at the latest
            self._waits.append(wait)
            self._check_settled()  # accepted after the hold: already settled?
            async with trio.open_nursery() as n:
                if dribble:
                    n.start_soon(_dribble, s, dribble, self.end)
                with contextlib.suppress(Exception):
                    await s.read(1)  # DONE(FAILED), EOF or a reset: the node gave up
                cut = True
                n.cancel_scope.cancel()
        self._waits.remove(wait)
        self.held -= 1
        if cut:
            self._check_settled()
        return "offer_cut" if cut else "offer_outlasted"

    async def badtoken(self, a: Attack) -> None:
        """``a.count`` wrong tokens with payload per second until the hold passed (>= once)."""
        end = self.start + self.badtoken_hold
        first = True
        while first or trio.current_time() < end:
            first = False
            for _ in range(a.count):
                await self._badtoken(a)
            await trio.sleep(1.0)  # paced: the attacker shares the test box's two cores

    async def _badtoken(self, a: Attack) -> None:
        try:
            with trio.fail_after(10):
                conn = await trio.open_tcp_stream(self.ip, self.data_port, local_address=a.source)
                async with conn:
                    await conn.send_all(self.rng.randbytes(32) + b"payload" * 100)
                    got = await conn.receive_some(10)
                    a.seen["closed" if not got else "answered"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            a.seen["closed"] += 1  # reset by the node while we were still writing
        except Exception as exc:
            a.seen[f"badtoken:{type(exc).__name__}"] += 1

    async def churn(self, a: Attack, workers: int = 8) -> None:
        """``a.count`` new connections to the libp2p port, ``workers`` at a time: each offers
        Noise and sends a valid first handshake message (a random X25519 key), so a node
        that admits it pays its side of the handshake (answers with message 2), then hangs
        up. Counts ``handshake`` (the node answered) and ``refused`` (closed)."""
        left = [a.count]
        start = trio.current_time()

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await self._churn_one(a)

        async with trio.open_nursery() as n:
            for _ in range(workers):
                n.start_soon(worker)
        a.seen["elapsed_ms"] = int(1000 * (trio.current_time() - start))

    async def _churn_one(self, a: Attack) -> None:
        hello = _ms(b"/multistream/1.0.0") + _ms(b"/noise")
        try:
            with trio.fail_after(5):
                sock = trio.socket.socket()
                await sock.bind((a.source, 0))
                await sock.connect((self.ip, self.port))
                async with trio.SocketStream(sock) as conn:
                    await conn.send_all(hello + b"\x00\x20" + self.rng.randbytes(32))
                    got = b""
                    while len(got) <= len(hello) + 2 + 32:
                        chunk = await conn.receive_some(4096)
                        if not chunk:
                            break
                        got += chunk
            a.seen["handshake" if len(got) > len(hello) + 2 + 32 else "refused"] += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            a.seen["refused"] += 1
        except trio.TooSlowError:
            a.seen["timeout"] += 1


async def _dribble(s: Any, gap: float, end: float) -> None:
    """One byte every ``gap`` s until ``end``; a write the node refuses ends it quietly."""
    with trio.move_on_at(end), contextlib.suppress(Exception):
        while True:
            await s.write(b"x")
            await trio.sleep(gap)


def _ms(line: bytes) -> bytes:
    """One multistream-select message: uvarint length, the line, a newline."""
    body = line + b"\n"
    return bytes([len(body)]) + body  # every line here is shorter than 128 bytes


def _connect(s: socket.socket, source: str, ip: str, port: int) -> None:
    s.setblocking(True)
    s.settimeout(5)
    s.bind((source, 0))
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
    p.add_argument("attacks", nargs="+", help="NAME[:COUNT][@SOURCE_IP], run at once")
    p.add_argument("--rounds", type=int, default=1, help="meshsub/streams: default COUNT")
    p.add_argument("--count", type=int, default=200, help="default COUNT")
    p.add_argument("--size", type=int, default=512 << 20, help="offers/dribble: offered bytes")
    p.add_argument("--hold", type=float, default=None, help="attack duration (s)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--bind", default="127.0.0.1", help="default SOURCE_IP")
    p.add_argument(
        "--settle-slots",
        type=int,
        default=None,
        help="offers/dribble: after the hold, wait until at most this many offers are held",
    )
    a = p.parse_args(argv)
    o = Outsider(a.target, a.data_port, a.seed, a.hold, a.size, a.settle_slots)
    attacks = [Attack.parse(spec, a.count, a.rounds, a.bind) for spec in a.attacks]
    runs: dict[str, Callable[[Attack], Awaitable[None]]] = {
        "meshsub": o.meshsub,
        "streams": o.streams,
        "idle": o.idle,
        "offers": o.offers,
        "dribble": o.dribble,
        "badtoken": o.badtoken,
        "churn": o.churn,
    }
    for attack in attacks:
        if attack.name not in runs:
            raise SystemExit(f"unknown attack {attack.name}")
        if attack.name in ("idle", "badtoken"):
            await o.discover_data_port(attack.source)
        if attack.name == "streams" and not o.protocols:
            o.protocols = await o.identify(attack.source)
    o.begin()
    async with trio.open_nursery() as n:
        for attack in attacks:
            n.start_soon(runs[attack.name], attack)
    report = {
        "protocols": o.protocols,
        "data_port": o.data_port,
        "seen": {x.name: dict(x.seen) for x in attacks},
    }
    print(f"{PREFIX} {json.dumps(report, sort_keys=True)}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
