"""Three honest ``swarm-tune node`` processes keep training while a hostile peer process attacks.

The attacker (hostile_peer.py, real libp2p hosts and the real SWRM encoder, one identity per
attack class) sends garbage, truncated messages, oversized length claims (in the SWRM header,
the control-stream length prefix and a bulk offer), messages signed by another key than the
transport peer id, broken signatures and payloads, replays (its own and relayed honest
messages), wrong-run messages, malformed protocol meta / an unknown message type, NaN
contributions for the current rounds, and floods of control messages, bulk garbage and
300 MiB bulk offers held open.

What it proves, on every honest node:
* every class that reaches the decoder is rejected and counted by reason (NodeMetrics
  snapshot logged at shutdown, cross-checked against per-message ``wire.rejected`` logs that
  name the attacking identity); NaN contributions are refused as ``non_finite``;
* transport-level claims are refused before allocation (the attacker reads the answers);
* repeat offenders are banned (``peer.banned`` for the garbage, forger and replay identities);
* training goes on: rounds committed with all 3 honest contributors after the attack, and the
  loss falls; memory stays bounded (RSS sampled from /proc during the attack).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from chaos_procs import chaos_env, chaos_node
from hostile_peer import REPORT_PREFIX, identity_of
from procs import Proc, free_port, patience, rss_kib, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(patience(200))]

HERE = Path(__file__).resolve().parent
RSS_CAP_KIB = 1_500 * 1024  # generous absolute cap per honest node
RSS_GROWTH_KIB = 300 * 1024  # growth allowed over the pre-attack baseline

# Attack class -> wire/protocol reasons that must appear in every honest node's counters.
EXPECTED_WIRE = {
    "garbage": {"bad_magic"},
    "truncated": {"truncated"},
    "oversized": {"message_too_large"},
    "forged": {"sender_mismatch", "bad_signature", "payload_digest"},
    "replay": {"duplicate"},
    "wrong_run": {"wrong_run"},
    "bad_meta": {"bad_dataset_size", "unknown_msg_type"},
}
BANNED = ("garbage", "forged", "replay")


class RssSampler:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: dict[int, list[int]] = {p: [] for p in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for p in self.pids:
                self.samples[p].append(rss_kib(p))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_honest_nodes_survive_a_hostile_peer(tmp_path: Path) -> None:
    env = chaos_env(SWARM_MAX_ROUNDS="0", SWARM_QUORUM="3", SWARM_ROUND_TIMEOUT_S="8")
    nodes = [chaos_node(i, "127.0.0.1", free_port(), tmp_path, env) for i in range(3)]
    hostile = Proc("hostile")
    try:
        for node in nodes:
            node.start([p.addr_via("127.0.0.1") for p in nodes if p is not node])
        wait_until(lambda: all(len(n.committed()) >= 2 for n in nodes), 90, "2 rounds each", nodes)
        baseline = {n.index: rss_kib(n.pid) for n in nodes}
        before = {n.index: n.max_closed() for n in nodes}
        targets = [n.addr_via("127.0.0.1") for n in nodes]
        started = time.monotonic()
        with RssSampler([n.pid for n in nodes]) as rss:
            hostile.spawn(
                [sys.executable, str(HERE / "hostile_peer.py"), "--run-id", "chaos",
                 "--timeout", "80", *(f"--target={t}" for t in targets)],
                {"PYTHONPATH": str(HERE)},
            )  # fmt: skip
            assert hostile.wait_exit(100) == 0, hostile.tail(100)
        attack_s = time.monotonic() - started
        reports = [x for x in hostile.lines() if x.startswith(REPORT_PREFIX)]
        assert reports, hostile.tail()
        report = json.loads(reports[0].split(" ", 1)[1])
        print(f"attack took {attack_s:.1f}s; attacker saw: {json.dumps(report['answers'])}")
        print(f"attacker errors: {report.get('errors')}")
        assert report["timed_out"] is False

        # Training continues after the attack: 3 more committed rounds with all 3 honest nodes.
        after = {n.index: n.max_closed() for n in nodes}
        wait_until(
            lambda: all(
                sum(1 for r in n.committed() if r["round"] > after[n.index]) >= 3 for n in nodes
            ),
            60,
            "3 committed rounds after the attack",
            nodes,
        )
        for node in nodes:
            node.signal(signal.SIGTERM)
        for node in nodes:
            assert node.wait_exit(60) == 0, node.tail()

        ids = {cls: identity_of(cls).peer_id for cls in report["peers"]}
        assert ids == report["peers"]
        for node in nodes:
            m = node.final_metrics()
            wire = m["wire_rejected"]
            contrib = m["contributions_rejected"]
            peak = max(rss.samples[node.pid])
            print(
                f"{node.name}: rounds {before[node.index]}->{node.max_closed()} "
                f"committed {m['rounds_committed']} fallback {m['rounds_fallback']} "
                f"wire_rejected {wire} contributions_rejected {contrib} "
                f"banned {m['peers_banned']} send_failures {m['send_failures']} "
                f"RSS baseline {baseline[node.index] // 1024} MiB peak {peak // 1024} MiB"
            )
            # Every attack class that reaches the decoder was rejected, counted by reason,
            # and attributed to the identity that sent it.
            rejected = node.events("wire.rejected")
            for cls, reasons in EXPECTED_WIRE.items():
                for reason in reasons:
                    assert wire.get(reason, 0) > 0, (cls, reason, wire)
                by_cls = {r["reason"] for r in rejected if r["peer"] == ids[cls]}
                assert reasons <= by_cls, (cls, reasons, by_cls)
            assert contrib.get("non_finite", 0) > 0, contrib
            nan_rejections = [
                r
                for r in node.events("contribution.rejected")
                if r["peer"] == ids["nan"] and r["reason"] == "non_finite"
            ]
            assert nan_rejections, node.events("contribution.rejected")
            # No honest peer was rejected: every rejection names an attacker.
            attackers = set(ids.values())
            assert {r["peer"] for r in rejected} <= attackers
            banned = {r["peer"] for r in node.events("peer.banned")}
            assert banned <= attackers, banned
            for cls in BANNED:
                assert ids[cls] in banned, (cls, banned)
            # Training went on and learned.
            late = [r for r in node.committed() if r["round"] > after[node.index]]
            assert len(late) >= 3 and all(r["contributors"] >= 3 for r in late), late
            evals = {r["tag"]: r["loss"] for r in node.events("eval")}
            assert evals["final"] < evals["start"] - 0.05, evals
            # Memory stayed bounded during the floods.
            assert peak < RSS_CAP_KIB, peak
            assert peak < baseline[node.index] + RSS_GROWTH_KIB, (peak, baseline[node.index])
        # Transport-level claims were refused before anything was allocated.
        over = report["answers"]["oversized"]
        assert over.get("bulk_offer_1TiB_TOO_LARGE") == len(nodes), over
        assert over.get("small_len_claim_answer_01") == len(nodes), over
        offers = report["answers"]["flood"]
        assert offers.get("offer_300MiB_BUSY", 0) > 0, offers
    finally:
        hostile.kill()
        for node in nodes:
            node.kill()
