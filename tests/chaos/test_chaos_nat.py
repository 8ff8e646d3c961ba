"""NAT traversal through a circuit relay v2, in network namespaces behind an nftables NAT.

Topology (names carry a random suffix; addresses exist only inside these namespaces)::

    <p>-pub 10.232.X.1 (.3) --veth-- 10.232.X.2 <p>-rtr 10.233.X.1 --veth-- 10.233.X.2 <p>-priv
    relay + public nodes            masquerade (nftables)                   NATed node

The public side has no route to 10.233.X.0/24, so nothing can dial the NATed node directly;
its own connections leave through the router's masquerade.

The first test drives py-libp2p hosts (tests/chaos/nat_peer.py): the NATed node reserves a
slot on the relay (``NetNode.reserve_relay``), the public node dials its ``/p2p-circuit``
address, and with DCUtR on both sides py-libp2p's DCUtR service adds a direct connection (the
NATed node's dial out through the masquerade); a small message and a 3 MB bulk message are
answered with their digests.

The second runs ``swarm-tune node`` processes set up only through SWARM_ settings: public P
and Q, and N behind the NAT with SWARM_RELAY_ADDRS (it keeps a slot on a ``swarm-tune relay``
and heartbeats its relayed address). The router drops everything from N to Q, so Q and N meet
only through the relay: Q's core learns N's relayed address from P's peer exchange and dials
the circuit; DCUtR (SWARM_ENABLE_DCUTR) cannot punch through the drop, so their contributions
travel over the relayed libp2p stream. Every round must average all three contributions.

Both tests' nodes set ``SWARM_ADVERTISE_PRIVATE=true`` (nat_peer.py: ``advertise_private``):
the public side here is 10.232.X.0/24, private addresses standing in for the internet. A node
that keeps relay slots (N) otherwise tells peers only globally routable addresses of its own
(``runtime/net/advertise.py``), so its DCUtR CONNECT would name nothing, not even the
masquerade's outside address, and DCUtR would not try at all.

Needs root, ``ip`` and ``nft``: skipped with a reason when missing locally, failed when ``CI``
is set. Cheap: two Python processes, no training.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_procs import chaos_env, chaos_node, require_root_tools
from netns_topology import sh
from procs import Proc, patience, seed_hex, wait_until

from swarm_tune.runtime.ops.peer_id import peer_id_from_seed

pytestmark = [pytest.mark.netns, pytest.mark.timeout(patience(90))]

PEER = str(Path(__file__).with_name("nat_peer.py"))
RELAY_PORT = 4101
NODE_PORT = 4001
ROUNDS = 2


class NatNet:
    """Three namespaces: public, a masquerading router, private (see the module docstring)."""

    def __init__(self) -> None:
        self.suffix = secrets.token_hex(3)
        self.octet = 1 + secrets.randbelow(254)
        self.created: list[str] = []

    def ns(self, role: str) -> str:
        return f"swn{self.suffix}-{role}"

    def pub_ip(self, host: int) -> str:
        return f"10.232.{self.octet}.{host}"

    def priv_ip(self, host: int) -> str:
        return f"10.233.{self.octet}.{host}"

    def nx(self, role: str, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns(role), *argv, stdin=stdin, check=check)

    def up(self) -> None:
        for role in ("pub", "rtr", "priv"):
            sh("ip", "netns", "add", self.ns(role))
            self.created.append(self.ns(role))
            self.nx(role, "ip", "link", "set", "lo", "up")
        # veth pairs: pub <-> rtr (public side), rtr <-> priv (private side)
        for a, b, net in (("pub", "rtr", self.pub_ip), ("priv", "rtr", self.priv_ip)):
            inner, outer = f"v{self.suffix}{a[:2]}", f"v{self.suffix}{a[:2]}r"
            sh("ip", "link", "add", inner, "netns", self.ns(a), "type", "veth", "peer", "name",
               outer, "netns", self.ns(b))  # fmt: skip
            host_ip, rtr_ip = (net(1), net(2)) if a == "pub" else (net(2), net(1))
            self.nx(a, "ip", "addr", "add", f"{host_ip}/24", "dev", inner)
            self.nx(b, "ip", "addr", "add", f"{rtr_ip}/24", "dev", outer)
            self.nx(a, "ip", "link", "set", inner, "up")
            self.nx(b, "ip", "link", "set", outer, "up")
        self.nx("priv", "ip", "route", "add", "default", "via", self.priv_ip(1))
        self.nx("rtr", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.nx("rtr", "nft", "-f", "-", stdin=(
            "table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n"
            f'  oifname "v{self.suffix}pur" counter masquerade\n }}\n}}\n'
        ))  # fmt: skip

    def masqueraded_packets(self) -> int:
        out = self.nx("rtr", "nft", "list", "table", "ip", "nat")
        word = out.split("packets", 1)[1].split()[0]
        return int(word)

    def down(self) -> None:
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()


@pytest.fixture
def natnet() -> Iterator[NatNet]:
    require_root_tools("ip", "nft")
    net = NatNet()
    try:
        net.up()
        yield net
    finally:
        net.down()


def _spawn(net: NatNet, role: str, name: str, *args: str) -> Proc:
    proc = Proc(name)
    proc.spawn(["ip", "netns", "exec", net.ns(role), sys.executable, PEER, *args], {})
    return proc


def _line(proc: Proc, prefix: str, timeout: float, others: list[Proc]) -> list[str]:
    wait_until(lambda: any(x.startswith(prefix) for x in proc.lines()), timeout, prefix, others)
    return next(x for x in proc.lines() if x.startswith(prefix)).split()[1:]


def _assert_unroutable(net: NatNet) -> None:
    """Nothing on the public side can route to the NATed node."""
    unreachable = net.nx("pub", "ip", "route", "get", net.priv_ip(2), check=False)
    assert unreachable == "", unreachable


def test_natted_node_is_reached_through_the_relay_and_dcutr_adds_a_direct_link(
    natnet: NatNet, tmp_path: Path
) -> None:
    _assert_unroutable(natnet)  # the relay is the only way in
    flag = "1"  # DCUtR on: the relayed-only path is the settings test's (Q and N)
    public = _spawn(natnet, "pub", "public", "public",
                    f"/ip4/{natnet.pub_ip(1)}/tcp/{RELAY_PORT}", str(tmp_path), flag)  # fmt: skip
    procs = [public]
    try:
        (relay_addr,) = _line(public, "RELAY", patience(20), procs)
        listen = f"/ip4/{natnet.priv_ip(2)}/tcp/0"
        natted = _spawn(natnet, "priv", "natted", "natted", listen, relay_addr, str(tmp_path), flag)
        procs.append(natted)
        (circuit,) = _line(natted, "RESERVED", patience(20), procs)
        assert circuit.startswith(relay_addr) and "/p2p-circuit/p2p/" in circuit
        _, *kinds = _line(public, "CONNECTED", patience(20), procs)
        assert kinds[0] == "relayed", public.tail() + natted.tail()
        # DCUtR: the public side cannot dial in, but the NATed side's dial out through the
        # masquerade gives both a direct connection next to the relayed one.
        upgraded = _line(public, "UPGRADED", patience(20), procs)
        assert "direct" in upgraded, upgraded
        wait_until(lambda: "DONE" in public.lines() and "DONE" in natted.lines(),
                   patience(30), "both sides done", procs)  # fmt: skip
        answers = [x.split() for x in public.lines() if x.startswith("ANSWER")]
        assert [a[1] for a in answers] == ["True", "True"], answers
        assert [a[2:4] for a in answers] == [["got", "small"], ["got", "bulk"]], answers
        assert [a[-1] for a in answers] == ["True", "True"], answers
        received = [x.split() for x in natted.lines() if x.startswith("RECEIVED")]
        assert all("direct" in r[3:] for r in received), received
        # The NATed node's traffic really left through the masquerade (its relay connection).
        assert natnet.masqueraded_packets() > 0
        assert public.wait_exit(patience(10)) == 0, public.tail()
        assert natted.wait_exit(patience(10)) == 0, natted.tail()
    finally:
        for p in procs:
            if p.alive():
                p.kill()


@pytest.mark.timeout(patience(240))
def test_natted_node_configured_by_settings_trains_through_the_relay(
    natnet: NatNet, tmp_path: Path
) -> None:
    """P and Q are public, N is behind the masquerade and set up only by SWARM_ settings: it
    keeps a slot on the relay R (SWARM_RELAY_ADDRS) and heartbeats its relayed address. The
    router drops everything from the private side to Q, so Q and N can meet only through
    R: Q learns N's relayed address from P's peer exchange and its core dials the circuit.
    DCUtR is on (SWARM_ENABLE_DCUTR) but cannot punch through that drop, so the bulk
    contributions between Q and N go over the relayed libp2p stream."""
    _assert_unroutable(natnet)
    q_ip = natnet.pub_ip(3)
    natnet.nx("pub", "ip", "addr", "add", f"{q_ip}/24", "dev", f"v{natnet.suffix}pu")
    natnet.nx("rtr", "nft", "-f", "-", stdin=(
        "table ip filter {\n chain block {\n  type filter hook forward priority 0;\n"
        f"  ip daddr {q_ip} counter drop\n }}\n}}\n"
    ))  # fmt: skip
    relay_seed = seed_hex(0x30)
    relay_id = peer_id_from_seed(bytes.fromhex(relay_seed))
    relay_addr = f"/ip4/{natnet.pub_ip(1)}/tcp/{RELAY_PORT}/p2p/{relay_id}"
    relay = Proc("relay")
    # MIN_PEERS 3 and no start deadline: no round starts before all three are members (on a
    # loaded box a node that started alone ran fallback rounds ahead and never synced back).
    env = chaos_env(SWARM_MAX_ROUNDS=str(ROUNDS), SWARM_QUORUM="1.0", SWARM_NUM_SHARDS="3",
                    SWARM_MIN_PEERS="3", SWARM_START_DEADLINE="0",
                    SWARM_ENABLE_DCUTR="true", SWARM_ADVERTISE_PRIVATE="true")  # fmt: skip
    pub = ["ip", "netns", "exec", natnet.ns("pub")]
    priv = ["ip", "netns", "exec", natnet.ns("priv")]
    p = chaos_node(0, natnet.pub_ip(1), NODE_PORT, tmp_path, env, pub)
    q = chaos_node(1, q_ip, NODE_PORT + 1, tmp_path, env, pub)
    n_env = dict(env, SWARM_RELAY_ADDRS=relay_addr)
    n = chaos_node(2, natnet.priv_ip(2), NODE_PORT, tmp_path, n_env, priv)
    nodes = [p, q, n]
    try:
        relay.spawn([*pub, sys.executable, "-m", "swarm_tune.runtime.cli", "relay"], {
            "SWARM_LISTEN_HOST": natnet.pub_ip(1), "SWARM_LISTEN_PORT": str(RELAY_PORT),
            "SWARM_NODE_KEY_SEED": relay_seed, "SWARM_ENABLE_MDNS": "false",
            "SWARM_ENABLE_DHT": "false", "SWARM_LOG_FORMAT": "json",
            "SWARM_ADVERTISE_PRIVATE": "true",
        })  # fmt: skip
        wait_until(lambda: any("SWARM_READY" in x for x in relay.lines()), 60, "relay", [relay])
        p.start([])
        q.start([p.addr])
        n.start([p.addr])
        for node in nodes:
            assert node.wait_exit(120) == 0, node.tail()
        circuit = f"{relay_addr}/p2p-circuit/p2p/{n.peer_id}"
        assert [r["address"] for r in n.events("node.dial_hint")] == [circuit], n.tail()
        dials = [r["address"] for r in q.events("net.dialled") if r["peer"] == n.peer_id]
        assert dials == [circuit], (dials, q.tail())
        for node in nodes:
            closed = node.closed_rounds()
            print(node.name, [(r["round"], r["outcome"], r["contributors"]) for r in closed])
            # An average holds all three contributions (MIN_PEERS 3), N's and Q's included,
            # and between those two only the relay carries them.
            assert len(node.committed()) == ROUNDS, closed
            assert all(int(r["contributors"]) == 3 for r in node.committed()), closed
        assert natnet.masqueraded_packets() > 0
    finally:
        for proc in [*nodes, relay]:
            proc.kill()
