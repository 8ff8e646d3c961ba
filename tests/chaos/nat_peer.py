"""One side of the NAT traversal test, run inside a network namespace (see test_chaos_nat.py).

``public RELAY_LISTEN WORKDIR DCUTR``: a relay node plus a public node in one process. It
prints ``RELAY <addr>``, waits for the NATed node's relayed address in ``WORKDIR/circuit``,
dials it (the NATed node has no route in from here: the only way in is ``/p2p-circuit``), with
``DCUTR=1`` waits for DCUtR to add a direct connection, sends a small message and a bulk
contribution, and waits for the NATed node's answer.

``natted LISTEN RELAY_ADDR WORKDIR DCUTR``: reserves a slot on the relay, publishes its relayed
address, and answers each message it gets with ``got <kind> <len> <sha256>`` (small).

``relay RELAY_LISTEN`` and ``dialer LISTEN WORKDIR DCUTR UPGRADE_WITHIN_S``: the two halves
of ``public`` in separate processes (benchmarks/bench_nat_two_nats.py puts the dialer behind a
second NAT); the dialer gives DCUtR at most UPGRADE_WITHIN_S seconds, then talks anyway.

Each step prints one line the test reads; every wait is bounded so the process ends itself.

Every node here runs with ``advertise_private=True`` (``SWARM_ADVERTISE_PRIVATE``): the
namespaces' "internet" is 10.x, private addresses standing in for public ones, and what peers
may be told (identify, a relay's reservation answer, DCUtR's CONNECT: ``advertise.py``) would
otherwise depend on the auto rule's reading of a network that has no public address at all.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import trio

from swarm_tune.runtime.net.config import NetConfig
from swarm_tune.runtime.net.host import is_circuit, parse_multiaddr
from swarm_tune.runtime.net.node import NetNode, open_net_node

BULK_BYTES = 3_000_000  # above max_small_size: goes through the bulk plane
DEADLINE_S = 60.0
WAN = {"advertise_private": True}  # see the module docstring


def say(*parts: object) -> None:
    print(*parts, flush=True)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def conn_kinds(node: NetNode, peer: str) -> list[str]:
    from libp2p.peer.id import ID

    conns = node.host.get_network().get_connections(ID.from_base58(peer))
    return [
        "relayed" if any(is_circuit(a) for a in c.get_transport_addresses()) else "direct"
        for c in conns
    ]


async def public(relay_listen: str, workdir: Path, dcutr: bool) -> None:
    relay_cfg = NetConfig(enable_relay=True, relay_hop=True, **WAN)
    async with open_net_node(b"R" * 32, [relay_listen], config=relay_cfg) as relay:
        say("RELAY", relay.multiaddrs[0])
        listen = relay_listen.rsplit("/", 1)[0] + "/0"
        await dialer(listen, workdir, dcutr, upgrade_within=DEADLINE_S)


async def relay_only(relay_listen: str) -> None:
    relay_cfg = NetConfig(enable_relay=True, relay_hop=True, **WAN)
    async with open_net_node(b"R" * 32, [relay_listen], config=relay_cfg) as relay:
        say("RELAY", relay.multiaddrs[0])
        await trio.sleep_forever()  # until the deadline or a kill


async def dialer(listen: str, workdir: Path, dcutr: bool, upgrade_within: float) -> None:
    """Dial the NATed node's relayed address, wait (at most ``upgrade_within`` s) for DCUtR
    to add a direct connection, send a small and a bulk message, print the answers."""
    circuit_file = workdir / "circuit"
    while not circuit_file.exists():
        await trio.sleep(0.1)
    circuit = circuit_file.read_text().strip()
    config = NetConfig(enable_relay=True, enable_dcutr=dcutr, **WAN)
    async with open_net_node(b"P" * 32, [listen], config=config) as me:
        say("DIALING", circuit)
        t0 = trio.current_time()
        natted = await me.connect(circuit)
        say("CONNECTED", natted, *conn_kinds(me, natted))
        if dcutr:  # py-libp2p's DCUtR service upgrades relayed connections by itself
            with trio.move_on_after(upgrade_within):
                while "direct" not in conn_kinds(me, natted):
                    await trio.sleep(0.1)
                say("UPGRADED", f"{trio.current_time() - t0:.2f}", *conn_kinds(me, natted))
        small = b"hello through the relay"
        bulk = bytes(range(256)) * (BULK_BYTES // 256)
        t1 = trio.current_time()
        await me.send_small(natted, small)
        await me.send_bulk(natted, bulk)
        for expect in (("small", small), ("bulk", bulk)):
            msg = await me.incoming.receive()
            want = f"got {expect[0]} {len(expect[1])} {digest(expect[1])}".encode()
            say("ANSWER", msg.peer_id == natted, msg.data.decode(), msg.data == want)
        say("SENT_S", f"{trio.current_time() - t1:.2f}")
        say("KINDS", *conn_kinds(me, natted))
        say("DONE")


async def natted(listen: str, relay_addr: str, workdir: Path, dcutr: bool) -> None:
    config = NetConfig(enable_relay=True, enable_dcutr=dcutr, **WAN)
    async with open_net_node(b"N" * 32, [listen], config=config) as me:
        circuit = await me.reserve_relay(relay_addr)
        assert is_circuit(parse_multiaddr(circuit))
        (workdir / "circuit.tmp").write_text(circuit)
        (workdir / "circuit.tmp").rename(workdir / "circuit")
        say("RESERVED", circuit)
        for kind in ("small", "bulk"):
            msg = await me.incoming.receive()
            say("RECEIVED", kind, len(msg.data), *conn_kinds(me, msg.peer_id))
            await me.send_small(
                msg.peer_id, f"got {kind} {len(msg.data)} {digest(msg.data)}".encode()
            )
        say("DONE")


def main(argv: list[str]) -> None:
    async def run() -> None:
        with trio.fail_after(DEADLINE_S):
            if argv[0] == "public":
                await public(argv[1], Path(argv[2]), argv[3] == "1")
            elif argv[0] == "relay":
                await relay_only(argv[1])
            elif argv[0] == "dialer":
                await dialer(argv[1], Path(argv[2]), argv[3] == "1", float(argv[4]))
            else:
                await natted(argv[1], argv[2], Path(argv[3]), argv[4] == "1")

    trio.run(run)


if __name__ == "__main__":
    main(sys.argv[1:])
