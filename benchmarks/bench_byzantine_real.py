"""Issue 12 in the real runtime: honest held-out loss with one ALIE/IPM node of five.

The simulator's matrix (docs/robustness.md) is the measurement; this run checks that the real
node behaves as the matrix says: 5 ``swarm-tune node`` processes on loopback (tiny-gpt2, 5
shards), node 4 started with ``SWARM_ADVERSARY=alie`` (or ``--attack``). The real attacker is
omniscient only through what it receives: it holds its contribution until it has every honest
one of the round (net/driver ``_await_view``), then crafts from them. The clean run starts the
SAME four honest nodes (same keys, shards, seeds) without node 4. Printed: the honest nodes'
mean final held-out loss in each run, the gap against the goal (the matrix's 2% at 20%),
rounds each honest node closed, the attacker's crafted sends and the honest nodes' rejections
of it, wall times. Every attack of ``--attacks`` is measured against ONE clean run.

``--control`` also runs each attack against the undefended swarm (weighted mean, no direction
test: ``SWARM_AGGREGATION_RULE=mean SWARM_DIRECTION_TEST=never``): a check that cannot fail
proves nothing, and in a few rounds tiny-gpt2's loss moves little, so the control says whether
the attack, as configured (``--strength``), is strong enough to show in the loss at all.

    nice .venv/bin/python benchmarks/bench_byzantine_real.py [--attacks alie,ipm] [--rounds 6]
        [--strength S] [--control]

Why a benchmark and not a timed test: two real swarms (9 node processes, each importing torch
and transformers) take about a minute on an idle 2-core box, twice the issue's test budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from procs import (  # type: ignore[import-not-found]
    NodeProc,
    free_port,
    full_mesh,
    loopback_env,
    wait_all_exit,
)

NODES = 5
ATTACKER = NODES - 1
GOAL_PCT = 2.0


UNDEFENDED = {"SWARM_AGGREGATION_RULE": "mean", "SWARM_DIRECTION_TEST": "never"}


def run(
    workdir: Path,
    rounds: int,
    attack: str | None,
    strength: float | None = None,
    protocol: dict[str, str] | None = None,
) -> tuple[list[float], dict[str, int], float]:
    """(honest final losses, counters, wall seconds) of one swarm (``protocol``: SWARM_
    settings of every node, e.g. UNDEFENDED)."""
    members = range(NODES) if attack else range(ATTACKER)
    env = loopback_env(
        **(protocol or {}),
        SWARM_NUM_SHARDS=str(NODES),
        # The honest four, in both runs: min_peers is also the count an average needs, and
        # a rejected attacker must leave the honest four averaging, not falling back alone.
        SWARM_MIN_PEERS=str(ATTACKER),
        SWARM_START_DEADLINE="0",
        SWARM_MAX_ROUNDS=str(rounds),
        SWARM_PARAM_SYNC_EVERY="0",
        SWARM_ROUND_TIMEOUT_S="60",
        SWARM_EVICTION_TIMEOUT_S="60",
        SWARM_CHECKPOINT_EVERY_ROUNDS="0",
    )
    procs = []
    for i in members:
        extra = {"SWARM_ADVERSARY": attack} if attack and i == ATTACKER else {}
        if extra and strength is not None:
            extra["SWARM_ADVERSARY_STRENGTH"] = str(strength)
        procs.append(NodeProc(i, free_port(), workdir, {**env, **extra}))
    t0 = time.perf_counter()
    with full_mesh(procs) as nodes:
        wait_all_exit(nodes, timeout=900)
        honest = [n for n in nodes if n.index != ATTACKER]
        bad = nodes[-1].peer_id if attack else None
        losses = [float(r["loss"]) for n in honest for r in n.events("eval") if r["tag"] == "final"]
        counts = {
            "averaged rounds (min honest)": min(len(n.committed()) for n in honest),
            "fallback rounds (all honest)": sum(
                r["outcome"] == "fallback" for n in honest for r in n.closed_rounds()
            ),
            "crafted sends": sum(
                len(n.events("adversary.corrupted")) for n in nodes if n.index == ATTACKER
            ),
            "honest rejections of it": sum(
                1 for n in honest for r in n.events("contribution.rejected") if r.get("peer") == bad
            ),
        }
        return losses, counts, time.perf_counter() - t0


def _mean(losses: list[float]) -> float:
    return sum(losses) / len(losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attacks", default="alie,ipm", help="SWARM_ADVERSARY of node 4, comma list")
    ap.add_argument("--rounds", type=int, default=6, help="rounds, every run")
    ap.add_argument("--strength", type=float, default=None, help="SWARM_ADVERSARY_STRENGTH")
    ap.add_argument("--control", action="store_true", help="also against the undefended mean")
    args = ap.parse_args()
    attacks = [a for a in args.attacks.split(",") if a]
    results: list[tuple[str, tuple[list[float], dict[str, int], float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("clean (4 honest)", run(Path(tmp) / "clean", args.rounds, None)))
        for attack in attacks:
            hit = run(Path(tmp) / attack, args.rounds, attack, args.strength)
            results.append((attack, hit))
            if args.control:
                bare = run(Path(tmp) / f"{attack}-bare", args.rounds, attack, args.strength,
                           UNDEFENDED)  # fmt: skip
                results.append((f"{attack} undefended", bare))
    for name, (losses, counts, wall) in results:
        print(
            f"{name:<22} honest final held-out loss {_mean(losses):.4f} "
            f"(per node {', '.join(f'{x:.4f}' for x in losses)}), {counts}, {wall:.0f} s"
        )
    clean = _mean(results[0][1][0])
    for name, (losses, counts, _) in results[1:]:
        gap = 100 * (_mean(losses) / clean - 1)
        if name.endswith("undefended"):
            print(f"CONTROL {name}: honest loss gap {gap:+.2f}% (the defended run's bound "
                  f"is {GOAL_PCT}%)")  # fmt: skip
            continue
        ok = gap <= GOAL_PCT and counts["crafted sends"] > 0
        print(f"{'PASS' if ok else 'FAIL'} {name} 1 of 5: honest loss gap {gap:+.2f}% "
              f"(goal <= {GOAL_PCT}%), crafted sends {counts['crafted sends']}")  # fmt: skip


if __name__ == "__main__":
    main()
