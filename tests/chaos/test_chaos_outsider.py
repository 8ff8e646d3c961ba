"""The hostile suite: an outsider (plain py-libp2p + TCP, tests/support/outsider.py) attacks one
of three honest ``swarm-tune node`` processes while they train; each attack is measured.

For every attack: garbage / truncated / oversized / varint-bomb / slow input on EVERY protocol
id the node advertises (asked through identify), 200 idle TCP connections on the data port,
512 MiB bulk offers that never send a byte (fresh keys, renewed), offers dribbled one byte a
second, and wrong tokens with payload on the data port. Judged on the victim:

* alive throughout, and training on: averaged (committed) rounds per second during the attack
  (from the outsider's ``OUTSIDER_START`` mark, after its imports and set-up, to its exit)
  against the clean rate measured in the same run just before and just after it (``raw``).
  A shared test box's load swings that by 2x between windows, so a **control swarm** (three
  more nodes, another run id, never attacked) trains through the same windows, and the
  ``controlled`` ratio divides out whatever slowed both:
  (victim / control during the attack) / (victim / control in the clean windows). The goal
  (>= 90%) is printed against it, with the outsider's own CPU seconds (a real attacker does
  not run on the victim's cores). The assertion is ``RATE_FLOOR`` = 25% of the raw rate,
  which still catches starvation: the issue's 200 idle connections took a node from 16 to 1
  averaged rounds per 10 s (6%);
* RSS growth over the pre-attack baseline <= 256 MiB (sampled every 0.25 s);
* the attack is visible in /metrics: ``swarm_tune_net_refused_total`` has its reason.

Prints one line per attack with the measured figures (the closing note quotes them).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from chaos_procs import chaos_env, chaos_node
from procs import NodeProc, free_port, patience, rss_kib, wait_until
from test_chaos_hostile_peer import RssSampler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(600))]

OUTSIDER = Path(__file__).resolve().parents[1] / "support" / "outsider.py"
WINDOW = 15.0  # seconds per measurement
RATE_GOAL = 0.9
RATE_FLOOR = 0.25
RSS_GROWTH_KIB = 256 * 1024
CONTROL_SEEDS = 0x61  # key seeds of the control swarm (the attacked one starts at 0x41)

# attack -> (outsider arguments, refusal reasons that must show up in /metrics)
ATTACKS: dict[str, tuple[list[str], set[str]]] = {
    "streams": (
        ["streams"],
        {"small_too_large", "bulk_bad_frame", "identify_push_malformed", "identify_written"},
    ),
    "idle": (["idle", "--count", "200", "--hold", str(WINDOW)], {"data_preauth_evicted"}),
    # Strangers share max_stranger_transfers slots: the rest of a flood gets BUSY.
    "offers": (
        ["offers", "--count", "40", "--size", str(512 << 20), "--hold", str(WINDOW)],
        {"bulk_busy"},
    ),
    "dribble": (
        ["dribble", "--count", "20", "--size", str(512 << 20), "--hold", str(WINDOW)],
        {"bulk_busy"},
    ),
    "badtoken": (["badtoken", "--count", "50", "--hold", str(WINDOW)], {"data_bad_token"}),
}


def refused(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("swarm_tune_net_refused_total{"):
            label, value = line.rsplit(" ", 1)
            out[label.split('reason="', 1)[1].rstrip('"}')] = float(value)
    return out


def test_outsider_attacks_keep_the_node_alive_training_and_bounded(tmp_path: Path) -> None:
    mport = free_port()
    env = chaos_env(SWARM_MAX_ROUNDS="0", SWARM_QUORUM="3", SWARM_ROUND_TIMEOUT_S="8")
    nodes = [chaos_node(i, "127.0.0.1", free_port(), tmp_path, env) for i in range(3)]
    victim = nodes[0]
    victim.env["SWARM_METRICS_PORT"] = str(mport)
    control_env = {**env, "SWARM_RUN_ID": "chaos-control"}
    control = [
        NodeProc(i, free_port(), tmp_path / "control", control_env, seed_offset=CONTROL_SEEDS)
        for i in range(3)
    ]
    try:
        for group in (nodes, control):
            for node in group:
                node.start([p.addr for p in group if p is not node])
        everyone = nodes + control
        wait_until(
            lambda: all(len(n.committed()) >= 3 for n in everyone), 120, "3 rounds", everyone
        )

        def tally() -> tuple[int, int, float]:
            return len(victim.committed()), len(control[0].committed()), time.monotonic()

        def rates(start: tuple[int, int, float]) -> tuple[float, float]:
            v, c, t = tally()
            return (v - start[0]) / (t - start[2]), (c - start[1]) / (t - start[2])

        def clean_window() -> tuple[float, float]:
            start = tally()
            time.sleep(WINDOW)  # a measurement window, not a synchronisation
            return rates(start)

        baseline_rss = rss_kib(victim.pid)
        results = []
        with RssSampler([victim.pid]) as rss:
            clean_after = clean_window()
            for name, (args, reasons) in ATTACKS.items():
                clean_before = clean_after
                cpu0 = _children_cpu()
                err_path = tmp_path / f"outsider-{name}.err"  # a file: a full pipe would block it
                with err_path.open("w") as err:
                    proc = subprocess.Popen(
                        [sys.executable, str(OUTSIDER), victim.addr, "0", *args],
                        stdout=subprocess.PIPE, stderr=err, text=True,
                    )  # fmt: skip
                assert proc.stdout is not None
                for line in proc.stdout:  # set-up (imports, data port, identify) is not the attack
                    if line.startswith("OUTSIDER_START"):
                        break
                start = tally()
                stdout, _ = proc.communicate(timeout=240)
                under, under_control = rates(start)
                elapsed = time.monotonic() - start[2]
                attacker_cpu = _children_cpu() - cpu0
                assert proc.returncode == 0, err_path.read_text()[-3000:]
                clean_after = clean_window()
                clean = (clean_before[0] + clean_after[0]) / 2
                clean_control = (clean_before[1] + clean_after[1]) / 2
                controlled = (under / max(under_control, 1e-9)) / (clean / max(clean_control, 1e-9))
                report = json.loads(stdout.splitlines()[-1].split(" ", 1)[1])
                assert victim.alive(), victim.tail()
                counts = refused(mport)
                peak = max(rss.samples[victim.pid] or [0])
                results.append((name, clean, under, elapsed, peak, counts, report["seen"]))
                print(
                    f"{name}: clean {clean:.2f} rounds/s, under attack {under:.2f} rounds/s "
                    f"(raw ratio {under / clean:.2f}, floor {RATE_FLOOR}; control swarm "
                    f"{clean_control:.2f} -> {under_control:.2f} rounds/s; "
                    f"controlled ratio {controlled:.2f}, goal >= {RATE_GOAL}) "
                    f"over {elapsed:.0f} s (outsider CPU {attacker_cpu:.1f} s, set-up included); "
                    f"RSS peak {peak // 1024} MiB (baseline {baseline_rss // 1024} MiB); "
                    f"refused {counts}; outsider saw {report['seen']}",
                    flush=True,
                )
                missing = reasons - set(counts)
                assert not missing, (name, missing, counts)
        for name, clean, under, _, peak, _, _ in results:
            assert under >= RATE_FLOOR * clean, (name, under, clean)
            assert peak - baseline_rss <= RSS_GROWTH_KIB, (name, peak, baseline_rss)
    finally:
        for node in nodes + control:
            node.terminate(30)
    assert victim.proc is not None and victim.proc.returncode == 0, victim.tail()


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children (the outsider, once it has exited)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
