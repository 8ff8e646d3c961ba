"""Discovery: six ``swarm-tune node`` processes that all bootstrap to node0 only.

Before, discovery was a star: peers learned from heartbeats were never dialled (the core had
no Dial effect), so nodes 1..5 reached node0 and nobody else, and lost the swarm with it.
Now heartbeats carry a few (peer id, dial hint) pairs (peer exchange), the core decides whom
to dial (a ``Dial`` effect, at most ``dial_peers`` per heartbeat tick) and the driver dials. The
test passes when every node is connected to all five others, and
node1..5 stay connected and keep committing rounds with all five contributors after node0 is
SIGKILLed.

The core's Dial effects must be what made the mesh: the star has 5 links, the mesh 15, and
every one of the 10 others needs at least one executed core dial (``net.dialled``; two
simultaneous dials of one link count twice, a link found already connected is logged
``net.dial_not_needed``). Nothing else dials: py-libp2p's auto-connector never starts and a
send never dials (``host.open_stream``; before, ``new_stream`` redialled any peer the
peerstore knew, and a CI run saw 0 core dials and 3 found connected). The DHT is off here
because a Kademlia lookup connects to the peers it queries (3 core dials, 5 found connected,
in one run with the DHT on); its provider records are tested with real hosts in
tests/net/test_net_node.py (listening on 127.0.0.1 and on 0.0.0.0).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import NodeProc, free_port, loopback_env, patience, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(400))]

N = 6
#: Links of the full mesh (N(N-1)/2) that the bootstrap star (N-1) does not make.
BEYOND_STAR = N * (N - 1) // 2 - (N - 1)


def joined(node: NodeProc) -> set[str]:
    """Peers that spoke the protocol to ``node`` (its core admitted them)."""
    return {str(r["peer"]) for r in node.events("peer.joined")}


def test_six_nodes_bootstrapping_to_one_become_a_mesh_that_survives_it(tmp_path: Path) -> None:
    env = loopback_env(
        SWARM_NUM_SHARDS=str(N),
        SWARM_MAX_ROUNDS="0",
        SWARM_QUORUM="1.0",
        SWARM_HEARTBEAT_INTERVAL_S="1",
        SWARM_CHECKPOINT_EVERY_ROUNDS="0",
        SWARM_ENABLE_DHT="false",  # its lookups dial too (see above): peer exchange only
    )
    nodes = [NodeProc(i, free_port(), tmp_path, env) for i in range(N)]
    hub = nodes[0]
    try:
        hub.start([])
        for node in nodes[1:]:
            node.start([hub.addr])
        ids = {n.peer_id for n in nodes}

        def mesh(group: list[NodeProc]) -> bool:
            return all(ids - {n.peer_id} <= joined(n) for n in group)

        wait_until(lambda: mesh(nodes), 180, "a full mesh from one bootstrap peer", nodes)

        def core_dials() -> int:
            return sum(len(n.events("net.dialled")) for n in nodes)

        # Polled: a dialler logs ``net.dialled`` when its connect returns, which on a busy box
        # can come after both sides already spoke on the new link.
        wait_until(lambda: core_dials() >= BEYOND_STAR, 30, "a core dial per link", nodes)
        not_needed = sum(len(n.events("net.dial_not_needed")) for n in nodes)
        print(f"core dials executed {core_dials()}, found already connected {not_needed}")
        hub.kill()
        rest = nodes[1:]
        base = {n.index: n.max_closed() for n in rest}

        # Connected to each other, not through node0: rounds average all five survivors.
        def full_rounds(n: NodeProc) -> int:
            return sum(
                1
                for r in n.committed()
                if r["round"] > base[n.index] and int(r["contributors"]) >= N - 1
            )

        wait_until(
            lambda: all(full_rounds(n) >= 2 for n in rest),
            240,
            "2 rounds averaging all 5 survivors on each, after node0 died",
            rest,
        )
    finally:
        for node in nodes:
            node.terminate(30)
