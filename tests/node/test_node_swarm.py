"""Real ``swarm-tune node`` processes training tiny-gpt2 together over loopback libp2p.

(a) three nodes commit rounds, loss falls, final parameters agree within the drift bound;
(b) SIGKILL one node mid-run: the others keep committing rounds; the restarted node (same key,
    same checkpoint dir) resumes from its checkpoint, catches up by state sync and rejoins at
    the swarm's current round, not at round 0;
(c) SIGTERM: exit code 0 and a valid final checkpoint.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch
from procs import NodeProc, free_port, loopback_env, wait_until

from swarm_tune.runtime.ops.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _swarm(tmp_path: Path, env: dict[str, str], n: int = 3) -> list[NodeProc]:
    return [NodeProc(i, free_port(), tmp_path, env) for i in range(n)]


def _others(nodes: list[NodeProc], i: int) -> list[str]:
    return [p.addr for p in nodes if p.index != i]


def _final_params(node: NodeProc) -> tuple[dict[str, torch.Tensor], int, dict[str, object]]:
    info = latest_checkpoint(node.ckpt_dir, "node-test")
    assert info is not None, f"node {node.index} left no valid checkpoint"
    tensors, meta = load_checkpoint(info, allowed_dir=node.ckpt_dir, expected_run_id="node-test")
    return tensors, meta.round, meta.extra


def _relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    diff = math.sqrt(sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a))
    scale = math.sqrt(sum(float(b[k].double().pow(2).sum()) for k in b))
    return diff / scale


def test_three_nodes_train_and_agree(tmp_path: Path) -> None:
    rounds = 6
    nodes = _swarm(tmp_path, loopback_env(SWARM_MAX_ROUNDS=str(rounds)))
    try:
        for node in nodes:
            node.start(_others(nodes, node.index))
        for node in nodes:
            assert node.wait_exit(timeout=120) == 0, node.tail()
        for node in nodes:
            ready = [line for line in node.stdout if line.startswith("SWARM_READY ")]
            assert ready == [f"SWARM_READY peer_id={node.peer_id} multiaddr={node.addr}"]
            closed = node.events("round.closed")
            committed = [r for r in closed if r["outcome"] == "average"]
            # Every node committed rounds with its peers' contributions in them.
            assert len(committed) >= rounds - 2, closed
            assert max(r["contributors"] for r in committed) == 3
            assert node.max_closed() == rounds - 1
            evals = {r["tag"]: r["loss"] for r in node.events("eval")}
            assert evals["final"] < evals["start"] - 0.1, evals
            train = [r["loss"] for r in node.events("train.done")]
            assert train[-1] < train[0], train
            durations = [r["duration_s"] for r in closed]
            print(
                f"node {node.index}: eval loss {evals['start']:.3f} -> {evals['final']:.3f}, "
                f"train loss {train[0]:.3f} -> {train[-1]:.3f}, round s mean "
                f"{sum(durations) / len(durations):.3f} max {max(durations):.3f}"
            )
        params = [_final_params(n) for n in nodes]
        for _, rnd, extra in params:
            assert rnd == rounds and extra["final"] is True
        for tensors, _, _ in params[1:]:
            distance = _relative_distance(tensors, params[0][0])
            print(f"relative parameter distance to node 0: {distance:.2e}")
            # Same contributor set every round: replicas differ only by float summation
            # order, far inside the drift bound (0.05).
            assert distance < 1e-3
    finally:
        for node in nodes:
            node.kill()


def test_kill_restart_rejoins_current_round_and_sigterm_is_clean(tmp_path: Path) -> None:
    # Slower rounds (more local work) so that "mid-round" and "the current round" mean
    # something; unbounded run, ended by SIGTERM.
    env = loopback_env(SWARM_LOCAL_STEPS="6", SWARM_BATCH_SIZE="16", SWARM_MAX_ROUNDS="0")
    nodes = _swarm(tmp_path, env)
    victim = nodes[2]
    try:
        for node in nodes:
            node.start(_others(nodes, node.index))
        wait_until(
            lambda: all(n.max_closed() >= 3 for n in nodes), 90, "3 rounds on every node", nodes
        )
        assert latest_checkpoint(victim.ckpt_dir, "node-test") is not None
        victim.kill()  # SIGKILL, wherever it is in its round
        killed_at = max(n.max_closed() for n in nodes[:2])
        survivors = nodes[:2]
        wait_until(
            lambda: all(n.max_closed() >= killed_at + 3 for n in survivors),
            60,
            "survivors commit rounds after the kill",
            nodes,
        )
        for n in survivors:
            after = [r for r in n.events("round.closed") if r["round"] > killed_at]
            assert after and all(r["outcome"] in ("average", "fallback") for r in after)
        swarm_round = max(n.max_closed() for n in survivors) + 1
        victim.start(_others(nodes, victim.index))
        wait_until(
            lambda: bool(victim.events("round.closed")), 60, "restarted node closes a round", nodes
        )
        resumed = victim.events("node.resumed")
        assert resumed and resumed[0]["round"] > 0  # from its checkpoint, not from scratch
        syncs = victim.events("sync.finished")
        assert syncs and syncs[0]["ok"] is True, syncs
        loaded = victim.events("state.loaded")
        assert loaded and loaded[0]["round"] >= swarm_round, (loaded, swarm_round)
        # Never restarted its count at 0.
        assert min(int(r["round"]) for r in victim.closed_rounds()) >= swarm_round

        # (c) SIGTERM: clean exit and a valid final checkpoint on every node.
        for node in nodes:
            node.signal(signal.SIGTERM)
        for node in nodes:
            assert node.wait_exit(timeout=60) == 0, node.tail()
            _, rnd, extra = _final_params(node)
            assert extra["final"] is True
            assert rnd >= swarm_round
            assert node.events("node.stopped")
    finally:
        for node in nodes:
            node.kill()
