"""Per-peer reputation: a sliding window of verdicts and temporary bans.

Why a window and a temporary ban: one bad update can be an honest bug (a NaN from an fp16
overflow), so a single rejection must not exile a peer. A high rejection *rate* over the last
``ban_window`` verdicts is a pattern, and earns a ban for ``ban_duration``. Bans expire because
identities are cheap to replace anyway; the point is to stop paying for a misbehaving peer's
traffic now, not to keep a permanent blacklist. Keys are verified peer ids only.
"""

from __future__ import annotations

from collections.abc import Sequence

from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.peer_memory import has_room, remember
from swarm_tune.runtime.protocol.reasons import RejectReason

# Verdicts about the round bookkeeping can hit honest but slow peers: they do not count.
NEUTRAL_REASONS = frozenset(
    {
        RejectReason.STALE,
        RejectReason.TOO_FAR_FUTURE,
        RejectReason.BUFFER_FULL,
        RejectReason.BANNED,
    }
)


class Reputation:
    def __init__(self, config: ProtocolConfig) -> None:
        self._cfg = config
        # Per peer, its last ``ban_window`` verdicts (True = accepted). Tuples, not deques: a
        # node may track thousands of peers (see validation.py).
        self._verdicts: dict[str, tuple[bool, ...]] = {}
        #: peer -> end of its ban. Read-only outside this class; empty in a clean swarm, so
        #: a caller on the per-message path tests it before paying for ``is_banned``.
        self.bans: dict[str, float] = {}

    def is_banned(self, peer: str, now: float) -> bool:
        until = self.bans.get(peer)
        if until is None:
            return False
        if now < until:
            return True
        # Served its time: a clean slate, or it would be re-banned on its first verdict.
        del self.bans[peer]
        self._verdicts.pop(peer, None)
        return False

    def banned_until(self, peer: str) -> float | None:
        return self.bans.get(peer)

    def record(self, peer: str, reason: RejectReason | None, now: float) -> float | None:
        """Record a verdict (None = accepted); return the ban deadline if this earns a ban."""
        if reason in NEUTRAL_REASONS:  # per refused message: no list for the common case
            return None
        return self.record_all(((peer, reason),), now)[0]

    def record_all(
        self, verdicts: Sequence[tuple[str, RejectReason | None]], now: float
    ) -> list[float | None]:
        """``record`` each verdict in order (a round close: one per admitted peer); each
        one's ban deadline or None. One loop, not a call per peer: a flat close records N."""
        cfg = self._cfg
        size, table, banned = cfg.ban_window, self._verdicts, self.bans
        room = has_room(table, len(verdicts))  # bans are kept apart, never forgotten early
        # Locals: a flat close records N verdicts.
        neutral, pop, threshold = NEUTRAL_REASONS, table.pop, cfg.ban_threshold
        evidence = cfg.direction_bans
        out: list[float | None] = []
        for peer, reason in verdicts:
            until = None
            # The common case (nobody banned) skips the ban lookup.
            if reason in neutral or (banned and self.is_banned(peer, now)):
                pass
            elif reason is RejectReason.DIRECTION and not evidence:
                pass  # a filter, not evidence (config.direction_bans)
            else:
                window = (*pop(peer, ()), reason is None)[-size:]
                if room:
                    table[peer] = window
                else:
                    remember(table, peer, window)
                # A window of acceptances only has rate 0, below any threshold (> 0): the
                # ``in`` scan is a fraction of the rate's cost, paid per peer per close.
                if len(window) >= size and False in window and _rejection_rate(window) >= threshold:
                    until = now + cfg.ban_duration
                    banned[peer] = until
            out.append(until)
        return out

    def convict(self, peer: str, now: float) -> float:
        """Ban ``peer`` at once on proof, not on a rate: a group-round slice that every
        receiver can recompute from pieces its contributors committed to (group.py) and
        that does not match is no honest bug. Returns the ban deadline."""
        until = now + self._cfg.ban_duration
        self.bans[peer] = until
        return until

    def rejection_rate(self, peer: str) -> float:
        return _rejection_rate(self._verdicts.get(peer, ()))

    def score(self, peer: str) -> float:
        """1.0 for a spotless peer, 0.0 for one whose every recent contribution failed."""
        return 1.0 - self.rejection_rate(peer)


def _rejection_rate(window: tuple[bool, ...]) -> float:
    return 1.0 - sum(window) / len(window) if window else 0.0
