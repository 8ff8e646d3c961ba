"""Discovery: six ``swarm-tune node`` processes that all bootstrap to node0 only.

Before, discovery was a star: peers learned from heartbeats were never dialled (the core had
no Dial effect), so nodes 1..5 reached node0 and nobody else, and lost the swarm with it.
Now heartbeats carry a few (peer id, dial hint) pairs (peer exchange), the core decides whom
to dial (a ``Dial`` effect, at most ``dial_peers`` per heartbeat tick) and the driver dials. The
test passes when every node is connected to all five others, and
node1..5 stay connected and keep committing rounds with all five contributors after node0 is
SIGKILLed.

The DHT is off here so that every connection beyond the star is attributable: py-libp2p's
auto-connector is disabled (host.py), but a Kademlia lookup connects to the peers it queries,
and with dialable provider addresses it wins that race often enough (3 core dials, 5 found
connected, in one run with the DHT on). The DHT's provider records are tested with real hosts
in tests/net/test_net_node.py (listening on 127.0.0.1 and on 0.0.0.0).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import NodeProc, free_port, loopback_env, patience, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(400))]

N = 6


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
        # Who made the links beyond the star is printed, not asserted: besides the core's Dial,
        # py-libp2p's new_stream dials a peer the peerstore knows (peer exchange put it there)
        # when the core sends to it first. Seen in a CI run: 0 core dials, 3 found connected.
        dialled = sum(len(n.events("net.dialled")) for n in nodes)
        not_needed = sum(len(n.events("net.dial_not_needed")) for n in nodes)
        print(f"core dials executed {dialled}, found already connected {not_needed}")
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
