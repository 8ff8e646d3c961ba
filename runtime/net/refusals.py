"""Every refusal the network layer makes, counted by reason; the peer's faults go to the core.

Why one object: the issue was that data-plane misbehaviour was only logged, so an operator
could not see an attack in ``/metrics`` and the core never learned which peer misbehaved.
Each place that refuses bytes (a stream handler that raised, a bulk offer over the cap, a
bad token on the data port, a stalled transfer) calls :meth:`Refusals.count` with a stable
reason label. Where the refusal is the *authenticated* peer's fault, it also names the peer
and a :class:`RejectReason`; the node forwards that to the core (``WireRejected``), which
alone decides on reputation and bans. Refusals on unauthenticated connections (the data
port before a valid token) have no peer to blame and are counted only: peer ids are free,
so blaming one there would let an attacker spend other peers' reputation.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from swarm_tune.runtime.protocol.reasons import RejectReason

log = logging.getLogger(__name__)

Blame = Callable[[str, RejectReason], None]


class Refusals:
    def __init__(self, blame: Blame | None = None) -> None:
        #: reason label -> count; exported as ``swarm_net_refused_total{reason=...}``.
        self.counts: Counter[str] = Counter()
        self._blame = blame

    def count(
        self, reason: str, peer: str | None = None, fault: RejectReason | None = None
    ) -> None:
        self.counts[reason] += 1
        log.info("net.refused reason=%s peer=%s", reason, peer or "-")
        if peer is not None and fault is not None and self._blame is not None:
            self._blame(peer, fault)
