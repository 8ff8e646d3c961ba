"""New inbound libp2p connections are admitted per source IP before any handshake.

The attacker is tests/support/outsider.py (plain sockets, nothing from this repository):
from 127.0.0.2 it opens connection after connection, each offering Noise with a valid first
handshake message, so every admitted one costs the node its half of a handshake. The node
must answer only as many as its per-IP bucket allows, count the rest, and still let an
honest peer (from 127.0.0.1) connect and talk during the flood. The bucket rules themselves
are checked on an injected clock.
"""

from __future__ import annotations

import pytest
import trio
from outsider_run import outsider_argv, parse_report

from swarm_tune.runtime.net import NetConfig, conn_limit, open_net_node
from swarm_tune.runtime.net.conn_limit import MAX_SOURCES, InboundLimiter, source_of
from swarm_tune.runtime.net.refusals import Refusals

FLOOD = 200


def seed(i: int) -> bytes:
    return bytes([i]) * 32


@pytest.mark.trio
async def test_a_fresh_connection_flood_from_one_ip_is_refused_before_the_handshake() -> None:
    cfg = NetConfig(conn_rate_per_ip=2.0, conn_burst_per_ip=10.0)
    async with open_net_node(seed(40), config=cfg) as victim, open_net_node(seed(41)) as honest:
        result: dict[str, object] = {}

        async def attack() -> None:
            cmd = outsider_argv(victim.multiaddrs[0], f"churn:{FLOOD}@127.0.0.2")
            done = await trio.run_process(cmd, capture_stdout=True, check=True)
            result.update(parse_report(done.stdout.decode())["seen"]["churn"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attack)
            with trio.fail_after(60):
                while victim.refusals.counts["conn_rate_ip"] < 20:  # the flood is on
                    await trio.sleep(0.05)
            assert await honest.connect(victim.multiaddrs[0]) == victim.peer_id
            await honest.send_small(victim.peer_id, b"still here")
            assert (await victim.incoming.receive()).data == b"still here"
    seen = {k: int(v) for k, v in result.items() if isinstance(v, int)}
    elapsed = seen["elapsed_ms"] / 1000
    # Without the limit every one of the FLOOD connections got a handshake answer.
    assert seen.get("handshake", 0) <= 10 + 2.0 * elapsed + 2, seen
    assert seen.get("handshake", 0) + seen.get("refused", 0) == FLOOD, seen
    assert victim.refusals.counts["conn_rate_ip"] >= seen.get("refused", 0) - 2, seen


@pytest.mark.trio
async def test_a_closed_inbound_connection_frees_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """py-libp2p 0.8.1 held an inbound slot (250 per swarm) until the swarm stopped, even
    after the connection closed: 250 connections in a node's life, and nobody could connect
    again. The swarm's slot count is shrunk to 2 here (the library's own limiter) so that a
    plain py-libp2p client needs only a few fresh keys to show it, and the closed-socket poll
    to 0.1 s (1 s made this test wait about 4 s)."""
    import multiaddr
    from libp2p import new_host
    from libp2p.peer.peerinfo import info_from_p2p_addr

    monkeypatch.setattr(conn_limit, "CLOSED_POLL_S", 0.1)

    async with open_net_node(seed(42)) as victim, open_net_node(seed(43)) as honest:
        swarm = victim.host.get_network()
        swarm._inbound_limiter = trio.CapacityLimiter(2)  # type: ignore[attr-defined]
        info = info_from_p2p_addr(multiaddr.Multiaddr(victim.multiaddrs[0]))
        for _ in range(4):  # twice the slots, one connection at a time
            stranger = new_host()
            async with stranger.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                with trio.fail_after(20):
                    await stranger.connect(info)
                    await stranger.disconnect(info.peer_id)
                    while swarm._inbound_limiter.borrowed_tokens:  # type: ignore[attr-defined]
                        await trio.sleep(0.05)  # freed within a socket poll
        assert await honest.connect(victim.multiaddrs[0]) == victim.peer_id
        await honest.send_small(victim.peer_id, b"let in")
        assert (await victim.incoming.receive()).data == b"let in"


def test_buckets_per_ip_and_in_total_and_live_connections() -> None:
    refusals = Refusals()
    lim = InboundLimiter(refusals, rate_per_ip=1.0, burst_per_ip=2.0, rate_total=10.0,
                         burst_total=5.0, max_per_ip=3)  # fmt: skip
    # Per IP: a burst of 2, then 1 per second.
    a1, a2 = lim.admit("10.0.0.1", 0.0), lim.admit("10.0.0.1", 0.0)
    assert a1 == a2 == "10.0.0.1"
    assert lim.admit("10.0.0.1", 0.0) is None
    assert lim.admit("10.0.0.1", 1.0) == "10.0.0.1"  # refilled one token
    # Live connections per source: 3 held, the 4th is refused even with tokens.
    assert lim.admit("10.0.0.1", 10.0) is None and refusals.counts["conn_per_ip"] == 1
    lim.release("10.0.0.1")
    assert lim.admit("10.0.0.1", 10.0) == "10.0.0.1"
    # In total: 5 tokens between all sources at t=10 (the total bucket refilled by then).
    admitted = [lim.admit(f"10.0.1.{i}", 10.0) for i in range(8)]
    assert sum(x is not None for x in admitted) == 4  # one was taken by 10.0.0.1 above
    assert refusals.counts["conn_rate_total"] == 4
    assert refusals.counts["conn_rate_ip"] == 1


def test_ipv6_sources_are_counted_per_64_and_the_table_is_bounded() -> None:
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::9")
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:10.0.0.1") == "10.0.0.1"
    lim = InboundLimiter(Refusals(), rate_per_ip=0.001, burst_per_ip=1.0, rate_total=1e9,
                         burst_total=1e9, max_per_ip=10)  # fmt: skip
    for i in range(MAX_SOURCES + 100):
        assert lim.admit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", float(i)) is not None
    assert len(lim._per_ip) == MAX_SOURCES
