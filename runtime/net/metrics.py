"""``NodeMetrics``: the counters a running node keeps, in one plain dataclass.

Why a dataclass and not a Prometheus registry here: the driver must not depend on an
exporter (tests, the simulator's recorder and a future ``/metrics`` endpoint all read the
same numbers), and plain attributes are free to update on the hot path. An exporter reads
:meth:`NodeMetrics.snapshot` (flat, JSON-friendly, label-ready dicts for per-reason counts).
Only the driver writes; everything is updated from the trio thread, so no locking.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class NodeMetrics:
    rounds_committed: int = 0  # closed with an average of >= min_peers contributions
    rounds_fallback: int = 0  # closed with the node's own update only
    rounds_skipped: int = 0  # closed with nothing to apply
    contributions_accepted: int = 0
    contributions_rejected: Counter[str] = field(default_factory=Counter)  # by reason
    wire_rejected: Counter[str] = field(default_factory=Counter)  # by WireError.reason
    net_refused: Counter[str] = field(default_factory=Counter)  # by transport refusal reason
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_out_by_message: Counter[str] = field(default_factory=Counter)  # by message type
    send_failures: int = 0
    dials: int = 0  # Dial effects executed (discovery)
    dials_failed: int = 0
    peers_live: int = 0
    peers_evicted: int = 0
    peers_banned: int = 0
    syncs_started: int = 0
    syncs_ok: int = 0
    syncs_failed: int = 0
    states_loaded: int = 0
    checkpoints_written: int = 0
    last_loss: float = float("nan")
    last_drift: float = float("nan")
    round: int = 0
    round_durations: deque[float] = field(default_factory=lambda: deque(maxlen=256))

    @property
    def rounds_closed(self) -> int:
        return self.rounds_committed + self.rounds_fallback + self.rounds_skipped

    def snapshot(self) -> dict[str, Any]:
        """A flat, JSON-serialisable copy (per-reason counters as dicts)."""
        durations = list(self.round_durations)
        return {
            "rounds_committed": self.rounds_committed,
            "rounds_fallback": self.rounds_fallback,
            "rounds_skipped": self.rounds_skipped,
            "contributions_accepted": self.contributions_accepted,
            "contributions_rejected": dict(sorted(self.contributions_rejected.items())),
            "wire_rejected": dict(sorted(self.wire_rejected.items())),
            "net_refused": dict(sorted(self.net_refused.items())),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bytes_out_by_message": dict(sorted(self.bytes_out_by_message.items())),
            "send_failures": self.send_failures,
            "dials": self.dials,
            "dials_failed": self.dials_failed,
            "peers_live": self.peers_live,
            "peers_evicted": self.peers_evicted,
            "peers_banned": self.peers_banned,
            "syncs_started": self.syncs_started,
            "syncs_ok": self.syncs_ok,
            "syncs_failed": self.syncs_failed,
            "states_loaded": self.states_loaded,
            "checkpoints_written": self.checkpoints_written,
            "last_loss": self.last_loss,
            "last_drift": self.last_drift,
            "round": self.round,
            "round_duration_mean": sum(durations) / len(durations) if durations else None,
            "round_duration_last": durations[-1] if durations else None,
        }
