"""A hostile peer process: real libp2p hosts and the real SWRM encoder, used to attack a swarm.

Why a separate process with real parts: the node under attack must see exactly what a remote
attacker can produce (authenticated libp2p connections carrying arbitrary bytes), through the
same stream handlers, the same decoder and the same driver as honest traffic. Every attack
class uses its *own* identity, so a ban earned by one class never hides the rejections another
class should produce, and each rejection can be attributed to its attack in the node's logs.

Usage: ``python hostile_peer.py --run-id RUN --target MULTIADDR [--target ...]``. Prints one
``HOSTILE_REPORT {json}`` line on stdout at the end (identities used, what the transport
answered, what was sent) and exits 0. Every step is bounded by a timeout; seeded randomness.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import blake3
import torch
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from swarm_tune.runtime.net import NetConfig, NetError, NetNode, open_net_node
from swarm_tune.runtime.net.bulk import BULK_PROTOCOL
from swarm_tune.runtime.net.framing import REPLY_LEN, Mode, Offer, Reply, read_exactly
from swarm_tune.runtime.net.protocol_codec import SKETCH_TENSOR, from_envelope, to_envelope
from swarm_tune.runtime.net.small import SMALL_PROTOCOL
from swarm_tune.runtime.protocol.messages import Contribution, Heartbeat, Message, StateRequest
from swarm_tune.runtime.protocol.rounds import update_kind
from swarm_tune.runtime.wire.codec import _SIG_CONTEXT, decode, encode, parse_fixed_header
from swarm_tune.runtime.wire.envelope import Envelope, MsgType
from swarm_tune.runtime.wire.errors import WireError
from swarm_tune.runtime.wire.identity import Identity

REPORT_PREFIX = "HOSTILE_REPORT"
CLASSES = (
    "garbage",
    "truncated",
    "oversized",
    "forged",
    "replay",
    "wrong_run",
    "bad_meta",
    "nan",
    "flood",
)
PARAM_SYNC_EVERY = 10  # the node's default; decides the kind of update a round expects


def seed_of(cls: str) -> bytes:
    return blake3.blake3(f"hostile/{cls}".encode()).digest()


def identity_of(cls: str) -> Identity:
    return Identity.from_seed(seed_of(cls))


class Attacker:
    """One identity, connected to every target; collects the honest hello heartbeats."""

    def __init__(self, cls: str, net: NetNode, run_id: str, targets: list[str]) -> None:
        self.cls = cls
        self.net = net
        self.ident = identity_of(cls)
        self.run_id = run_id
        self.targets = targets
        self.rounds: dict[str, int] = {}
        self.captured: dict[str, bytes] = {}  # target -> one of its signed messages
        self.state: dict[str, torch.Tensor] = {}
        self.answers: dict[str, int] = {}

    def count(self, what: str) -> None:
        self.answers[what] = self.answers.get(what, 0) + 1

    async def listen(self) -> None:
        async for inc in self.net.incoming:
            try:
                env = decode(inc.data, expected_run_id=self.run_id)
                msg = from_envelope(env)
            except WireError:
                continue
            self.captured.setdefault(inc.peer_id, bytes(inc.data))
            if isinstance(msg, Heartbeat):
                self.rounds[inc.peer_id] = max(self.rounds.get(inc.peer_id, 0), msg.round)
            elif hasattr(msg, "tensors") and not self.state:
                self.state = {k: v for k, v in msg.tensors.items() if k != SKETCH_TENSOR}

    def wire(self, msg: Message, *, run_id: str | None = None, round: int = 0) -> bytearray:
        env = to_envelope(msg, run_id or self.run_id, self.ident.peer_id, round=round)
        return encode(env, self.ident)

    def heartbeat(self, target: str = "", run_id: str | None = None) -> bytearray:
        rnd = self.rounds.get(target, 0)
        return self.wire(Heartbeat(rnd, 100, "x" * 16, (0.0, 1.0)), run_id=run_id)

    async def small(self, target: str, data: bytes | bytearray) -> None:
        try:
            await self.net.send_small(target, bytes(data))
            self.count("small_ok")
        except NetError as exc:
            self.count(f"small_{type(exc).__name__}")

    async def bulk(self, target: str, data: bytes | bytearray) -> None:
        try:
            await self.net.send_bulk(target, data)
            self.count("bulk_ok")
        except NetError as exc:
            self.count(f"bulk_{type(exc).__name__}")

    async def raw_stream(self, target: str, proto: str, payload: bytes) -> bytes:
        """Write raw bytes on a fresh protocol stream; return what came back (bounded)."""
        stream = await self.net.host.new_stream(ID.from_base58(target), [TProtocol(proto)])
        try:
            await stream.write(payload)
            with trio.move_on_after(5):
                return bytes(await stream.read(128))
            return b""
        finally:
            await stream.reset()


def resign(data: bytearray, ident: Identity) -> bytearray:
    """Re-sign a (modified) encoded message so only the modification is wrong."""
    info = parse_fixed_header(memoryview(data))
    digest = blake3.blake3(bytes(data[: info.sig_offset])).digest()
    data[info.sig_offset : info.payload_offset] = ident.sign(_SIG_CONTEXT + digest)
    return data


# ------------------------------------------------------------------------------ attacks


async def garbage(a: Attacker, t: str, rng: random.Random) -> None:
    for i in range(12):
        blob = rng.randbytes(rng.randrange(1, 4000))
        await a.small(t, blob)
        if i % 4 == 0:
            await a.bulk(t, rng.randbytes(200_000))


async def truncated(a: Attacker, t: str, rng: random.Random) -> None:
    for _ in range(10):
        full = a.heartbeat(t)
        await a.small(t, full[: rng.randrange(8, len(full) - 1)])


async def oversized(a: Attacker, t: str, rng: random.Random) -> None:
    # Transport-level claims first (answered before any allocation), then SWRM headers.
    answer = await a.raw_stream(t, SMALL_PROTOCOL, struct.pack(">I", 0x7FFF_FFFF))
    a.count(f"small_len_claim_answer_{answer.hex()}")
    answer = await a.raw_stream(t, BULK_PROTOCOL, Offer(Mode.STREAM, 1 << 40).encode())
    status = Reply.decode(answer).status.name if len(answer) == REPLY_LEN else answer.hex()
    a.count(f"bulk_offer_1TiB_{status}")
    for _ in range(10):
        data = a.heartbeat(t)
        struct.pack_into("<Q", data, 24, 1 << 40)  # payload length claim: 1 TiB
        await a.small(t, data)


async def forged(a: Attacker, t: str, rng: random.Random) -> None:
    other = Identity.from_seed(seed_of("forged-other-key"))
    for i in range(12):
        if i % 3 == 0:  # signed by another key than the transport peer id
            env = to_envelope(Heartbeat(0, 100, "x", (0.0,)), a.run_id, other.peer_id)
            data = encode(env, other)
        elif i % 3 == 1:  # our header, broken signature
            data = a.heartbeat(t)
            info = parse_fixed_header(memoryview(data))
            data[info.sig_offset + rng.randrange(64)] ^= 0xFF
        else:  # signature fine, payload bytes changed in transit
            data = a.heartbeat(t)
            data[-1] ^= 0x01
        await a.small(t, data)
        if i == 0 and t in a.captured:  # an honest peer's message, replayed by us
            await a.small(t, a.captured[t])


async def replay(a: Attacker, t: str, rng: random.Random) -> None:
    data = a.heartbeat(t)
    for _ in range(12):
        await a.small(t, data)
    for other, msg in a.captured.items():
        if other != t:
            await a.small(t, msg)  # another node's signed message, relayed by us


async def wrong_run(a: Attacker, t: str, rng: random.Random) -> None:
    for _ in range(10):
        await a.small(t, a.heartbeat(t, run_id="some-other-run"))


async def bad_meta(a: Attacker, t: str, rng: random.Random) -> None:
    for i in range(12):
        if i % 2 == 0:
            meta: dict[str, Any] = {"n": rng.randrange(1 << 40), "dataset_size": "lots"}
            env = Envelope(MsgType.HEARTBEAT, a.run_id, 0, a.ident.peer_id, meta)
            await a.small(t, encode(env, a.ident))
        else:
            data = a.heartbeat(t)
            struct.pack_into("<H", data, 6, 77)  # unknown message type, validly signed
            await a.small(t, resign(data, a.ident))


async def nan(a: Attacker, t: str, rng: random.Random) -> None:
    with trio.move_on_after(30):
        await a.small(t, a.wire(StateRequest(rng.randrange(1 << 30))))  # learn the model spec
        while not a.state:
            await trio.sleep(0.1)
    if not a.state:
        a.count("no_state_response")
        return
    # Rounds are short: aim at the next rounds (buffered by the node, checked when they
    # open), following the target's heartbeats for a few seconds, each round once.
    sent: set[int] = set()
    with trio.move_on_after(6):
        while True:
            cur = a.rounds.get(t, 0)
            for rnd in (cur + 1, cur + 2):
                if rnd in sent:
                    continue
                sent.add(rnd)
                tensors = {k: torch.full_like(v, float("nan")) for k, v in a.state.items()}
                c = Contribution(rnd, update_kind(rnd, PARAM_SYNC_EVERY), 100, tensors)
                await a.bulk(t, a.wire(c))
            await trio.sleep(0.2)


async def flood(a: Attacker, t: str, rng: random.Random) -> None:
    # Offer flood: 40 concurrent 300 MiB DIRECT offers that never send a byte, held 6 s.
    answers: list[str] = []
    async with trio.open_nursery() as n:
        for _ in range(40):
            n.start_soon(_hold_offer, a, t, 300 << 20, 6.0, answers)
    for status in answers:
        a.count(f"offer_300MiB_{status}")
    async with trio.open_nursery() as n:
        for _ in range(20):  # 20 concurrent senders, 300 garbage control messages
            n.start_soon(_flood_small, a, t, random.Random(rng.random()), 15)
        for _ in range(4):  # and concurrent bulk garbage of 2 MB each
            n.start_soon(a.bulk, t, rng.randbytes(2_000_000))


async def _flood_small(a: Attacker, t: str, rng: random.Random, k: int) -> None:
    for _ in range(k):
        await a.small(t, b"SWRM" + rng.randbytes(rng.randrange(10, 2000)))


async def _hold_offer(a: Attacker, t: str, size: int, hold: float, out: list[str]) -> None:
    try:
        stream = await a.net.host.new_stream(ID.from_base58(t), [BULK_PROTOCOL])
    except Exception:
        out.append("stream_failed")
        return
    try:
        await stream.write(Offer(Mode.DIRECT, size).encode())
        raw = await read_exactly(stream, REPLY_LEN, 10)
        out.append(Reply.decode(raw).status.name)
        await trio.sleep(hold)
    except Exception as exc:
        out.append(type(exc).__name__)
    finally:
        await stream.reset()


ATTACKS: dict[str, Callable[[Attacker, str, random.Random], Awaitable[None]]] = {
    "garbage": garbage,
    "truncated": truncated,
    "oversized": oversized,
    "forged": forged,
    "replay": replay,
    "wrong_run": wrong_run,
    "bad_meta": bad_meta,
    "nan": nan,
    "flood": flood,
}


async def _attack_all(a: Attacker, fn: Callable[..., Awaitable[None]], seed: int) -> None:
    async with trio.open_nursery() as n:
        for i, t in enumerate(a.targets):
            n.start_soon(fn, a, t, random.Random(seed * 1000 + i))


def _leaves(group: BaseExceptionGroup[Exception]) -> list[str]:
    out: list[str] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(f"{type(exc).__name__}: {exc}"[:300])
    return out


async def main(run_id: str, targets: list[str], classes: list[str], timeout: float) -> None:
    report: dict[str, Any] = {"peers": {}, "answers": {}, "timed_out": False}
    with trio.move_on_after(timeout) as scope:
        async with AsyncExitStack() as stack:
            attackers: list[Attacker] = []
            cfg = NetConfig(control_timeout=5.0)
            for cls in classes:
                net = await stack.enter_async_context(
                    open_net_node(seed_of(cls), ["/ip4/127.0.0.1/tcp/0"], (), cfg)
                )
                ids = [await net.connect(addr) for addr in targets]
                attackers.append(Attacker(cls, net, run_id, ids))
                report["peers"][cls] = net.peer_id
            async with trio.open_nursery() as nursery:
                for a in attackers:
                    nursery.start_soon(a.listen)
                await trio.sleep(2.5)  # hello heartbeats (rounds, captured messages) arrive
                for seed, a in enumerate(attackers):
                    try:
                        await _attack_all(a, ATTACKS[a.cls], seed)
                    except* Exception as group:  # report, do not hide the other classes
                        report.setdefault("errors", {})[a.cls] = _leaves(group)
                    report["answers"][a.cls] = dict(sorted(a.answers.items()))
                nursery.cancel_scope.cancel()
    report["timed_out"] = scope.cancelled_caught
    print(f"{REPORT_PREFIX} {json.dumps(report, sort_keys=True)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--target", action="append", required=True)
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    trio.run(main, args.run_id, args.target, args.classes.split(","), args.timeout)
    sys.exit(0)
