"""Replay protection with bounded memory.

Why per (run, sender) windows: a signature proves who made a message, not that it is new;
anyone on the path can re-send a captured CONTRIBUTION. The guard remembers what each
sender said in its most recent `window_rounds` rounds and rejects repeats, plus anything
from rounds older than that window (we can no longer tell whether it is a repeat, and the
protocol has no use for it). Windows are tracked per sender, so a hostile peer that claims
round 10**12 only moves its *own* window, never evicting honest peers' history.

Why the message digest (not just the payload digest): the replay key is
(run_id, round, sender, digest) where `digest` is BLAKE3 of the signed header, which
commits to the payload digest *and* to type and meta. Two heartbeats in the same round
carry identical (empty) payloads but are different messages; keying on the payload alone
would reject the second one.

Memory is bounded by `max_entries` digests in total (least recently active senders are
forgotten first; their high-water round is kept in a bounded map so their old rounds stay
rejected) and by `max_per_round` messages per sender and round.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from swarm_tune.runtime.wire.envelope import Envelope
from swarm_tune.runtime.wire.errors import Replay

__all__ = ["ReplayGuard"]


@dataclass(slots=True)
class _SenderState:
    high: int = -1
    rounds: dict[int, set[bytes]] = field(default_factory=dict)
    entries: int = 0


class ReplayGuard:
    """Admit each (run_id, round, sender, digest) at most once; see module docstring."""

    def __init__(
        self,
        *,
        window_rounds: int = 16,
        max_entries: int = 200_000,
        max_per_round: int = 1024,
        max_forgotten: int = 100_000,
    ) -> None:
        if min(window_rounds, max_entries, max_per_round, max_forgotten) <= 0:
            raise ValueError("ReplayGuard bounds must be positive")
        if max_entries < window_rounds * max_per_round:
            # Otherwise one sender alone could exceed max_entries (it is never self-evicted).
            raise ValueError("max_entries must be >= window_rounds * max_per_round")
        self.window_rounds = window_rounds
        self.max_entries = max_entries
        self.max_per_round = max_per_round
        self.max_forgotten = max_forgotten
        self._senders: OrderedDict[tuple[str, str], _SenderState] = OrderedDict()
        self._forgotten: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._entries = 0

    def __len__(self) -> int:
        """Number of digests currently remembered."""
        return self._entries

    def admit(self, envelope: Envelope) -> None:
        """Record a decoded envelope or raise `Replay`. Needs ``envelope.digest``."""
        if not envelope.digest:
            raise ValueError("envelope has no digest; only decoded envelopes can be admitted")
        self.admit_key(envelope.run_id, envelope.round, envelope.sender, envelope.digest)

    def admit_key(self, run_id: str, round: int, sender: str, digest: bytes) -> None:
        """Record one message key or raise `Replay` (duplicate, stale or flooding)."""
        key = (run_id, sender)
        state = self._senders.get(key)
        if state is None:
            state = _SenderState(high=self._forgotten.pop(key, -1))
            self._senders[key] = state
        else:
            self._senders.move_to_end(key)
        if round <= state.high - self.window_rounds:
            raise Replay("stale_round")
        seen = state.rounds.get(round)
        if seen is None:
            seen = state.rounds[round] = set()
        if digest in seen:
            raise Replay("duplicate")
        if len(seen) >= self.max_per_round:
            raise Replay("round_flood")
        seen.add(digest)
        state.entries += 1
        self._entries += 1
        if round > state.high:
            state.high = round
            floor = round - self.window_rounds
            for old in [r for r in state.rounds if r <= floor]:
                n = len(state.rounds.pop(old))
                state.entries -= n
                self._entries -= n
        while self._entries > self.max_entries and len(self._senders) > 1:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        key, state = self._senders.popitem(last=False)
        self._entries -= state.entries
        self._forgotten[key] = state.high
        self._forgotten.move_to_end(key)
        while len(self._forgotten) > self.max_forgotten:
            self._forgotten.popitem(last=False)
