"""What a running node shows the outside world: Prometheus metrics, round history, state JSON.

Why this shape:

* **The driver stays exporter-free.** ``NodeDriver`` keeps plain counters (``NodeMetrics``) and
  calls three observer hooks (a round closed, an evaluation finished, a message was heard).
  Everything here *reads* those: the Prometheus collector turns ``NodeMetrics.snapshot()``
  into metric families at scrape time, so the hot path pays nothing per scrape and the
  numbers in ``/metrics``, ``/api/state`` and the node's logs are the same numbers.
* **One registry per node, not the global one.** Tests run several monitors in one process;
  the default registry would merge (and reject) their duplicate metric names.
* **History is a bounded deque plus an append-only JSONL file.** The dashboard's loss curves
  must survive a page reload (served from memory) and a node restart (reloaded from disk).
  One line per closed round, one per evaluation; a torn last line from a SIGKILL is skipped
  on load, and the file is compacted to the last ``keep`` rounds when it grows past 4x that,
  via write-to-temp + rename so a crash mid-compaction leaves the old file intact.
  Appends are tiny (~200 bytes per round) and happen on the trio thread on purpose: they
  stay ordered with the events that produced them.
* Everything runs on the trio thread (hooks from the driver, the HTTP handlers reading
  state), so no locks.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from swarm_tune.runtime.ops.logging import get_logger

if TYPE_CHECKING:
    from swarm_tune.runtime.net.driver import NodeDriver
    from swarm_tune.runtime.net.metrics import NodeMetrics
    from swarm_tune.runtime.protocol.effects import RoundClosed
    from swarm_tune.runtime.protocol.messages import Message

__all__ = [
    "HISTORY_FILE",
    "DriverObserver",
    "History",
    "NodeMonitor",
    "RoundSample",
    "SnapshotCollector",
]

log = get_logger(__name__)

HISTORY_FILE = "metrics-history.jsonl"
#: Round-duration buckets (seconds): sub-second loopback rounds up to internet-scale timeouts.
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_PREFIX = "swarm_tune"


class DriverObserver(Protocol):
    """The hooks ``NodeDriver`` calls (all on the trio thread, all cheap, none may raise)."""

    def round_closed(self, eff: RoundClosed) -> None: ...

    def evaluated(self, tag: str, applied_round: int, loss: float) -> None: ...

    def heard(self, peer: str, message: Message) -> None: ...


def _num(x: float | None) -> float | None:
    """JSON has no NaN: missing values travel as null."""
    return None if x is None or math.isnan(x) or math.isinf(x) else float(x)


@dataclass(slots=True)
class RoundSample:
    """One closed round as this node saw it (deltas are since the previous closed round)."""

    round: int
    t: float  # wall-clock seconds (unix) at close: for humans, never for ordering
    outcome: str
    duration: float
    loss: float | None
    eval_loss: float | None = None
    contributors: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    peers_live: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("loss", "eval_loss", "duration"):
            if isinstance(d[key], float) and not math.isfinite(d[key]):
                d[key] = None if key != "duration" else 0.0
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoundSample:
        rejected = d.get("rejected") or {}
        if not isinstance(rejected, dict):
            raise ValueError("rejected must be an object")
        return cls(
            round=int(d["round"]),
            t=float(d["t"]),
            outcome=str(d["outcome"]),
            duration=float(d["duration"]),
            loss=_num(None if d.get("loss") is None else float(d["loss"])),
            eval_loss=_num(None if d.get("eval_loss") is None else float(d["eval_loss"])),
            contributors=int(d.get("contributors", 0)),
            accepted=int(d.get("accepted", 0)),
            rejected={str(k): int(v) for k, v in rejected.items()},
            bytes_in=int(d.get("bytes_in", 0)),
            bytes_out=int(d.get("bytes_out", 0)),
            peers_live=int(d.get("peers_live", 0)),
        )


class History:
    """The last ``keep`` rounds, in memory and (when ``path`` is given) in a JSONL file.

    A round number seen again (a restart re-running rounds after its last checkpoint)
    replaces the older sample: the curve shows what the node finally did in that round.
    """

    def __init__(self, path: Path | None, keep: int = 500) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.path = path
        self.keep = keep
        self._rows: dict[int, RoundSample] = {}
        self.eval_start: float | None = None
        self._lines = 0
        if path is not None:
            self._load(path)

    def __len__(self) -> int:
        return len(self._rows)

    def samples(self) -> list[RoundSample]:
        return [self._rows[r] for r in sorted(self._rows)]

    def add(self, sample: RoundSample) -> None:
        self._rows[sample.round] = sample
        self._trim()
        self._append({"kind": "round", **sample.to_json()})

    def set_eval(self, round_: int, loss: float) -> bool:
        """Attach an evaluation of the parameters *after* ``round_`` to that round's sample."""
        row = self._rows.get(round_)
        value = _num(loss)
        if row is None or value is None:
            return False
        row.eval_loss = value
        self._append({"kind": "eval", "round": round_, "eval_loss": value})
        return True

    # -- persistence ----------------------------------------------------------------------

    def _trim(self) -> None:
        while len(self._rows) > self.keep:
            del self._rows[min(self._rows)]

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
            self._lines += 1
            if self._lines > 4 * self.keep:
                self._compact()
        except (OSError, ValueError) as exc:  # metrics must never take the node down
            log.warning("metrics.history_write_failed", path=str(self.path), error=str(exc))

    def _compact(self) -> None:
        assert self.path is not None
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        rows = self.samples()
        with tmp.open("w", encoding="utf-8") as f:
            for s in rows:
                f.write(json.dumps({"kind": "round", **s.to_json()}, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines = len(rows)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("metrics.history_unreadable", path=str(path), error=str(exc))
            return
        bad = 0
        for line in _lines(text):
            self._lines += 1
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                if rec.get("kind") == "eval":
                    row = self._rows.get(int(rec["round"]))
                    if row is not None:
                        row.eval_loss = _num(float(rec["eval_loss"]))
                else:
                    sample = RoundSample.from_json(rec)
                    self._rows[sample.round] = sample
            except (ValueError, KeyError, TypeError):
                bad += 1  # a torn last line (SIGKILL mid-append) or a hand-edited file
        self._trim()
        if bad:
            log.warning("metrics.history_bad_lines", path=str(path), count=bad)


def _lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if line.strip():
            yield line


class SnapshotCollector:
    """A Prometheus collector that reads ``NodeMetrics`` at scrape time."""

    def __init__(self, metrics: NodeMetrics, extra: dict[str, float | None]) -> None:
        self._metrics = metrics
        self._extra = extra  # values NodeMetrics does not keep (eval loss)

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families are produced at scrape time

    def collect(self) -> Iterable[Metric]:
        s = self._metrics.snapshot()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{_PREFIX}_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            v = math.nan if value is None else value
            return GaugeMetricFamily(f"{_PREFIX}_{name}", doc, value=v)

        def by_label(
            name: str, doc: str, label: str, values: dict[str, int]
        ) -> CounterMetricFamily:
            family = CounterMetricFamily(f"{_PREFIX}_{name}", doc, labels=[label])
            for key, n in values.items():
                family.add_metric([key], n)
            return family

        rounds = CounterMetricFamily(
            f"{_PREFIX}_rounds", "Closed rounds by outcome.", labels=["outcome"]
        )
        for outcome in ("committed", "fallback", "skipped"):
            rounds.add_metric([outcome], s[f"rounds_{outcome}"])
        yield rounds
        yield counter(
            "contributions_accepted", "Peer contributions accepted.", s["contributions_accepted"]
        )
        yield by_label(
            "contributions_rejected",
            "Peer contributions rejected, by reason.",
            "reason",
            s["contributions_rejected"],
        )
        yield by_label(
            "wire_rejected", "Frames rejected before decoding.", "reason", s["wire_rejected"]
        )
        yield by_label(
            "net_refused",
            "Transport refusals (streams, offers, data connections), by reason.",
            "reason",
            s["net_refused"],
        )
        yield counter("bytes_in", "Bytes received from peers.", s["bytes_in"])
        yield counter("bytes_out", "Bytes sent to peers.", s["bytes_out"])
        yield by_label(
            "message_bytes_out",
            "Bytes sent to peers, by message type (updates against heartbeats and control).",
            "message",
            s["bytes_out_by_message"],
        )
        yield counter("messages_in", "Messages received.", s["messages_in"])
        yield counter("messages_out", "Messages sent.", s["messages_out"])
        yield counter("send_failures", "Sends that failed or timed out.", s["send_failures"])
        yield gauge("peers_live", "Peers currently live.", s["peers_live"])
        yield counter("peers_evicted", "Evictions (silence past the timeout).", s["peers_evicted"])
        yield counter("peers_banned", "Bans (rejection rate too high).", s["peers_banned"])
        yield counter("syncs_ok", "State syncs that succeeded.", s["syncs_ok"])
        yield counter("syncs_failed", "State syncs that failed.", s["syncs_failed"])
        yield counter("checkpoints_written", "Checkpoints written.", s["checkpoints_written"])
        yield gauge("round", "Current round number.", s["round"])
        yield gauge("loss", "Training loss of the last local step.", _num(s["last_loss"]))
        yield gauge("eval_loss", "Held-out loss of the last evaluation.", self._extra["eval"])
        yield gauge("drift", "Last measured parameter drift to peers.", _num(s["last_drift"]))


class NodeMonitor:
    """Observer of one ``NodeDriver``: feeds the history and answers the HTTP endpoints."""

    def __init__(
        self,
        driver: NodeDriver,
        *,
        node_id: str,
        history_path: Path | None,
        keep: int = 500,
    ) -> None:
        self.driver = driver
        self.node_id = node_id
        self.history = History(history_path, keep)
        self.started = time.time()
        self._extra: dict[str, float | None] = {"eval": None}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(driver.metrics, self._extra))
        self._duration = Histogram(
            f"{_PREFIX}_round_duration_seconds",
            "Wall-clock seconds from a round's opening to its close.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._prev = self._totals()
        #: peer -> peers it reported in its last heartbeat (partial views only).
        self._reports: dict[str, tuple[str, ...]] = {}

    # -- DriverObserver ---------------------------------------------------------------------

    def round_closed(self, eff: RoundClosed) -> None:
        duration = max(0.0, eff.closed_at - eff.opened_at)
        self._duration.observe(duration)
        now = self._totals()
        prev, self._prev = self._prev, now
        rejected = now["rejected"] - prev["rejected"]
        m = self.driver.metrics
        self.history.add(
            RoundSample(
                round=eff.round,
                t=time.time(),
                outcome=eff.outcome,
                duration=duration,
                loss=_num(m.last_loss),
                contributors=int(eff.contributors),
                accepted=now["accepted"].total() - prev["accepted"].total(),
                rejected=dict(sorted((+rejected).items())),
                bytes_in=now["bytes"]["in"] - prev["bytes"]["in"],
                bytes_out=now["bytes"]["out"] - prev["bytes"]["out"],
                peers_live=m.peers_live,
            )
        )

    def evaluated(self, tag: str, applied_round: int, loss: float) -> None:
        self._extra["eval"] = _num(loss)
        if tag == "start" and not self.history.samples():
            self.history.eval_start = _num(loss)
        # ``applied_round`` is the next round to apply: the parameters reflect the one before.
        self.history.set_eval(applied_round - 1, loss)

    def heard(self, peer: str, message: Message) -> None:
        known = getattr(message, "known_peers", None)
        if known:
            self._reports[peer] = tuple(sorted(p for p, _ in known))

    # -- HTTP payloads --------------------------------------------------------------------

    def metrics_text(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def state(self) -> dict[str, Any]:
        """The JSON behind the dashboard (see ``/api/state``)."""
        import trio

        d = self.driver
        p = d.protocol
        now = trio.current_time()
        peers = []
        for rec in p.peers.records():
            until = p.reputation.banned_until(rec.peer)
            banned = until is not None and until > now
            peers.append(
                {
                    "peer_id": rec.peer,
                    "address": rec.address,
                    "subnet": rec.subnet,
                    "live": rec.live,
                    "last_seen_s": round(max(0.0, now - rec.last_seen), 3),
                    "round": rec.round,
                    "reputation": round(p.reputation.score(rec.peer), 4),
                    "banned": banned,
                    "banned_for_s": round(until - now, 1) if banned and until else 0.0,
                }
            )
        me = d.identity.peer_id
        edges = [{"source": me, "target": q["peer_id"], "live": q["live"]} for q in peers]
        for src, targets in sorted(self._reports.items()):
            edges += [
                {"source": src, "target": t, "live": True, "reported": True}
                for t in targets
                if t != src
            ]
        snap = d.metrics.snapshot()
        for key in ("last_loss", "last_drift"):
            snap[key] = _num(snap[key])
        return {
            "node_id": self.node_id,
            "peer_id": me,
            "run_id": d.config.run_id,
            "round": p.round,
            "applied_round": d.applied_round,
            "phase": p.phase.name.lower(),
            "uptime_s": round(time.time() - self.started, 1),
            "time": time.time(),
            "eval_loss": self._extra["eval"],
            "eval_start": self.history.eval_start,
            "metrics": snap,
            "peers": peers,
            "edges": edges,
            "history": [s.to_json() for s in self.history.samples()],
        }

    def _totals(self) -> dict[str, Any]:
        m = self.driver.metrics
        return {
            "accepted": Counter({"n": m.contributions_accepted}),
            "rejected": Counter(m.contributions_rejected),
            "bytes": {"in": m.bytes_in, "out": m.bytes_out},
        }
