"""A campaign people start one at a time: nobody trains, or finishes, before the swarm is there.

Real ``swarm-tune node`` processes on loopback, started one after another with a pause
between them (STAGGER_S, 12 s; ``SWARM_TEST_STAGGER_S=60`` reproduces the issue's 60 s run:
what is checked does not depend on the length of the pause). The campaign needs all three
(``min_peers 3``) and has no start deadline, so:

* the first node waits visibly (``node.waiting_for_peers`` in its log, ``waiting_for_peers``
  as the phase in its ``/api/state``), closes no round and does not exit while alone, nor
  while only two are there;
* once the third node arrives, all three open round 0 together, and every round any of them
  commits is averaged from all three;
* each finishes with ``max_rounds`` averaged rounds and a final checkpoint.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from procs import NodeProc, free_port, loopback_env, patience, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(300))]

STAGGER_S = float(os.environ.get("SWARM_TEST_STAGGER_S", "12"))
ROUNDS = 4


def _state(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as r:
            state: dict[str, Any] = json.load(r)
            return state
    except OSError:
        return None


def _hold_while(nodes: list[NodeProc], seconds: float) -> None:
    """For ``seconds``: every started node stays alive and closes no round."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for n in nodes:
            assert not n.crashed() and n.alive(), f"{n.name} exited while waiting:\n{n.tail()}"
            assert not n.closed_rounds(), f"{n.name} closed a round before the swarm was there"
        time.sleep(0.5)


def test_staggered_start_waits_for_the_swarm(tmp_path: Path) -> None:
    metrics = free_port()
    env = loopback_env(
        SWARM_MAX_ROUNDS=str(ROUNDS),
        SWARM_MIN_PEERS="3",
        SWARM_START_DEADLINE="0",  # wait for the swarm however long it takes
        SWARM_ROUND_TIMEOUT_S="60",
        SWARM_EVICTION_TIMEOUT_S="60",
    )
    nodes = [NodeProc(i, free_port(), tmp_path, env) for i in range(3)]
    nodes[0].env["SWARM_METRICS_PORT"] = str(metrics)
    everyone = [p.addr for p in nodes]
    try:
        nodes[0].start([a for a in everyone if a != nodes[0].addr])
        wait_until(
            lambda: bool(nodes[0].events("node.waiting_for_peers")),
            120,  # a node's start-up (torch, the model) on a busy box
            "node 0 waits",
            nodes[:1],
        )
        wait_until(
            lambda: (_state(metrics) or {}).get("phase") == "waiting_for_peers",
            60,
            "node 0's /api/state says waiting_for_peers",
            nodes[:1],
        )
        _hold_while(nodes[:1], STAGGER_S)

        nodes[1].start([nodes[0].addr])
        wait_until(
            lambda: bool(nodes[1].events("node.waiting_for_peers")), 120, "node 1 waits", nodes
        )
        _hold_while(nodes[:2], STAGGER_S)
        waiting = nodes[0].events("node.waiting_for_peers")
        assert waiting[0]["need"] == 3, waiting

        nodes[2].start([nodes[0].addr, nodes[1].addr])
        for n in nodes:
            assert n.wait_exit(timeout=180) == 0, n.tail()
        for n in nodes[:2]:  # they waited; they started once the swarm was complete
            started = n.events("node.started_rounds")
            assert started and started[0]["members"] == 3 and started[0]["why"] == "peers", started
        # The last node may find everyone there at once (then it never waits), or wait briefly.
        late = nodes[2].events("node.started_rounds")
        assert all(r["members"] == 3 and r["why"] == "peers" for r in late), late
        for n in nodes:
            closed = n.closed_rounds()
            assert closed, n.tail()
            assert min(int(r["round"]) for r in closed) == 0, closed  # all began at round 0
            not_full = [r for r in closed if r["outcome"] != "average" or r["contributors"] != 3]
            assert not_full == [], f"{n.name}: rounds not averaged by all 3: {not_full}"
            assert len(closed) == ROUNDS, closed
            assert n.events("node.stopped")
    finally:
        for n in nodes:
            n.kill()
