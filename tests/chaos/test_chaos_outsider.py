"""The hostile suite: an outsider (plain py-libp2p + TCP, tests/support/outsider.py) attacks one
of three honest ``swarm-tune node`` processes while they train.

The attacks: garbage / truncated / oversized / varint-bomb / slow input on EVERY protocol id
the node advertises (asked through identify), 200 idle TCP connections on the data port,
512 MiB bulk offers that never send a byte, offers dribbled one byte a second (fresh keys
each), and wrong tokens with payload on the data port. They run **all at once**, each from
its own loopback address (127.0.0.2-6, separate attackers inside their own per-IP budgets):
one 10 s attack phase instead of five attacks with clean windows between them (212 s of CI
time before). Judged on the victim:

* alive throughout and still training: averaged (committed) rounds per second under attack at
  least ``RATE_FLOOR`` of the clean rate measured just before in the same run. The floor
  catches starvation (the issue's 200 idle connections took a node from 16 to 1 averaged
  rounds per 10 s, 6%); the >= 90% goal per attack is measured, attack by attack against
  interleaved clean windows, by benchmarks/bench_outsider.py, not in a timed test on a
  shared box;
* RSS growth over the pre-attack baseline <= 256 MiB (sampled every 0.25 s);
* every attack visible in /metrics (``swarm_tune_net_refused_total`` by reason);
* strangers' bulk offers (offers + dribble, 36 fresh keys) never hold more than the
  ``max_stranger_transfers`` slots: every other offer was refused (BUSY) or cut (evicted as
  behind schedule), and the node counted each as ``bulk_busy`` / ``bulk_stalled``. Which of
  the two happens depends on how fast the offers arrive (within one stall grace of each
  other: BUSY; later: eviction), i.e. on the box's load, so neither alone is required.
  "Held at the end" is read once the outsider saw at most ``STRANGER_SLOTS`` offers held, or
  10 s after the hold (its ``--settle-slots``): on a loaded box the node's cut of an evicted
  offer reached the outsider more than the 1 s it used to wait (14 "held" of 8 slots, once
  in CI at load 8-16). The node's own cut of a stalled offer comes 30 s after it (its
  ``idle_timeout``), so within that wait only an eviction can cut one. An offer accepted
  after that judgement (its fresh key's set-up outlasted the hold) is ``offer_late``, let go
  at once, not held at the end: the outsider's own resets free slots the node then hands on.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from chaos_procs import chaos_env, chaos_node
from outsider_run import SUITE, Outsider, outsider_argv, refused
from procs import NodeProc, free_port, patience, rss_kib, wait_until
from test_chaos_hostile_peer import RssSampler

from swarm_tune.runtime.net import NetConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(300))]

CLEAN = 10.0  # seconds of clean rounds measured before the attack
HOLD = 10.0  # seconds the attacks last
RATE_FLOOR = 0.25
RSS_GROWTH_KIB = 256 * 1024
STRANGER_SLOTS = NetConfig().max_stranger_transfers

# attack (outsider_run.SUITE) -> refusal reasons that must show in /metrics
REASONS: dict[str, set[str]] = {
    "streams": {"small_too_large", "bulk_bad_frame", "identify_push_malformed", "identify_written"},
    "idle": {"data_preauth_evicted"},
    "offers": set(),  # judged against the stranger slots (check_stranger_slots)
    "dribble": set(),
    "badtoken": {"data_bad_token"},
}


def test_outsider_attacks_keep_the_node_alive_training_and_bounded(tmp_path: Path) -> None:
    mport = free_port()
    env = chaos_env(SWARM_MAX_ROUNDS="0", SWARM_QUORUM="3", SWARM_ROUND_TIMEOUT_S="8")
    nodes = [chaos_node(i, "127.0.0.1", free_port(), tmp_path, env) for i in range(3)]
    victim = nodes[0]
    victim.env["SWARM_METRICS_PORT"] = str(mport)
    outsider: Outsider | None = None
    try:
        for node in nodes:
            node.start([p.addr for p in nodes if p is not node])
        wait_until(lambda: all(len(n.committed()) >= 3 for n in nodes), 120, "3 rounds", nodes)
        baseline_rss = rss_kib(victim.pid)
        with RssSampler([victim.pid]) as rss:
            clean = committed_rate(victim, CLEAN)
            cpu0 = _children_cpu()
            # The hold ends once at most STRANGER_SLOTS offers are held (a cut reaches the
            # outsider late on a loaded box), or 10 s later: a condition, not a fixed 1 s.
            settle = ("--settle-slots", str(STRANGER_SLOTS))
            argv = outsider_argv(victim.addr, *SUITE.values(), "--hold", str(HOLD), *settle)
            outsider = Outsider(argv, tmp_path / "outsider.err")
            outsider.started()  # set-up (imports, data port, identify) is not the attack
            rounds0, t0 = len(victim.committed()), time.monotonic()
            report = outsider.finish(timeout=patience(120))
            elapsed = time.monotonic() - t0
            under = (len(victim.committed()) - rounds0) / elapsed
        assert victim.alive(), victim.tail()
        # Some reasons are counted after the outsider already has its answer (an identify
        # request's garbage is read after the node answered it; an identify-push is judged
        # once its handler is done): a loaded victim may count them after the outsider exits.
        counts: dict[str, float] = {}
        wanted = set().union(*REASONS.values())

        def all_counted() -> bool:
            counts.update(refused(mport))
            return wanted <= set(counts)

        wait_until(all_counted, 30, "every attack counted in /metrics", [victim],
                   context=lambda: f"missing {wanted - set(counts)}; counted {counts}")  # fmt: skip
        peak = max(rss.samples[victim.pid] or [0])
        seen = report["seen"]
        print(
            f"all {len(SUITE)} attacks at once for {elapsed:.0f} s: clean {clean:.2f} "
            f"rounds/s, under attack {under:.2f} rounds/s (ratio {under / clean:.2f}, floor "
            f"{RATE_FLOOR}; the per-attack >= 0.9 goal: benchmarks/bench_outsider.py); outsider "
            f"CPU {_children_cpu() - cpu0:.1f} s (set-up included); RSS peak {peak // 1024} "
            f"MiB (baseline {baseline_rss // 1024} MiB); refused {counts}; outsider saw {seen}",
            flush=True,
        )
        assert set(REASONS) == set(SUITE)
        for name, reasons in REASONS.items():
            assert not reasons - set(counts), (name, reasons - set(counts), counts)
        check_stranger_slots(seen["offers"], seen["dribble"], counts)
        assert under >= RATE_FLOOR * clean, (under, clean)
        assert peak - baseline_rss <= RSS_GROWTH_KIB, (peak, baseline_rss)
    finally:
        if outsider is not None:
            outsider.kill()
        stop(nodes)
    assert victim.proc is not None and victim.proc.returncode == 0, victim.tail()


def committed_rate(node: NodeProc, seconds: float) -> float:
    """Averaged rounds per second over the next ``seconds``."""
    start, t0 = len(node.committed()), time.monotonic()
    time.sleep(seconds)  # a measurement window, not a synchronisation
    return (len(node.committed()) - start) / (time.monotonic() - t0)


def check_stranger_slots(
    offers: dict[str, int], dribble: dict[str, int], counts: dict[str, float]
) -> None:
    """60 strangers' offers against ``STRANGER_SLOTS`` slots (see the module docstring)."""

    def total(key: str) -> int:
        return int(offers.get(key, 0)) + int(dribble.get(key, 0))

    admitted, busy = total("offer_status:0"), total("offer_status:2")
    assert admitted + busy > STRANGER_SLOTS, ("the flood never exceeded the slots", offers, dribble)
    assert total("offer_outlasted") <= STRANGER_SLOTS, (offers, dribble)
    assert busy + total("offer_cut") > 0, (offers, dribble)
    assert counts.get("bulk_busy", 0) >= busy, (busy, counts)
    assert counts.get("bulk_stalled", 0) >= total("offer_cut"), (offers, dribble, counts)


def stop(nodes: list[NodeProc]) -> None:
    """SIGTERM to all at once (each stops cleanly), then wait; SIGKILL a node that hangs."""
    for node in nodes:
        node.signal(signal.SIGTERM)
    for node in nodes:
        if node.proc is None:
            continue
        try:
            node.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (the outsider, once it has exited)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
