"""The network model: latency, jitter, bandwidth with FIFO queues, loss and partitions.

Why analytical queueing instead of SimPy resources: a 10,000-node swarm sends millions of
messages; modelling each uplink as a SimPy ``Resource`` costs several events per message
(request, hold, release) and a process per transfer. Each node's uplink and downlink are FIFO
servers, so the time a message leaves and lands can be *computed* at send time from two
numbers per node (``uplink_free_at``, ``downlink_free_at``), and the driver schedules exactly
one SimPy event: the arrival. The arithmetic (a cut-through transfer through two FIFO links):

    up_start   = max(now, uplink_free_at[src])
    up_end     = up_start + bits / uplink_bps[src]          -> uplink_free_at[src]
    first_bit  = up_start + latency(src, dst)
    down_start = max(first_bit, downlink_free_at[dst])
    arrival    = max(down_start + bits / downlink_bps[dst], up_end + latency(src, dst))
                                                            -> downlink_free_at[dst]

So a 250 MB update on a 20 Mbit/s uplink holds it for 100 s, anything sent after it waits,
and the slower of the two ends sets the pace. Downlink queueing is computed in *send* order,
which equals arrival order except when a later-sent message over a much shorter path would
overtake; the error is bounded by the latency difference and is accepted for one event per
message.

Control messages (heartbeats, state requests, goodbyes: anything up to ``control_max_bytes``,
64 KiB by default) travel in a separate lane per node with its own FIFO clocks. Real
transports do not make a 300-byte heartbeat wait 100 s behind a bulk upload: each transfer
is its own yamux/QUIC stream or connection, and the kernel interleaves their packets. Without
this, heartbeats queued behind 248 MB contributions on 20 Mbit/s uplinks and the protocol
evicted thousands of healthy peers (wan-heterogeneous). The lane only ignores the *bulk*
queue; control messages still pay latency plus their own serialisation time and queue
behind each other. Their bytes are too few to slow bulk transfers, so bulk ignores them.

Loss drops a whole message (transports retransmit packets; what the protocol sees is a
message that never arrives, e.g. a stream reset). A lost message still occupied the uplink.
Partitions are group labels per node: while a partition is open, messages between different
groups are dropped when sent and when they would arrive.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from swarm_tune.sim.distributions import Constant, Distribution

CONTROL_MAX_BYTES = 64 * 1024  # messages up to this size use the control lane


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one transmission: when it lands, or why it does not."""

    arrival: float | None  # None = dropped
    reason: str = ""  # "loss" | "partition" when dropped


class Network:
    """Per-node link state and the site-to-site latency matrix (seconds)."""

    def __init__(
        self,
        site_of: Sequence[int],
        latency_s: Sequence[Sequence[float]],
        uplink_bps: Sequence[float],
        downlink_bps: Sequence[float],
        rng: random.Random,
        jitter_ms: Distribution | None = None,
        loss: float = 0.0,
        control_max_bytes: int = CONTROL_MAX_BYTES,
    ) -> None:
        n = len(site_of)
        if not (len(uplink_bps) == len(downlink_bps) == n):
            raise ValueError("one uplink and downlink rate per node")
        if any(b <= 0 for b in uplink_bps) or any(b <= 0 for b in downlink_bps):
            raise ValueError("bandwidths must be positive")
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.site_of = list(site_of)
        self.latency_s = [list(row) for row in latency_s]
        self.uplink_bps = list(uplink_bps)
        self.downlink_bps = list(downlink_bps)
        self.uplink_free_at = [0.0] * n  # bulk lane
        self.downlink_free_at = [0.0] * n
        self.control_up_free_at = [0.0] * n  # control lane (see module docstring)
        self.control_down_free_at = [0.0] * n
        self.control_max_bytes = control_max_bytes
        self.loss = loss
        self._rng = rng
        jitter = jitter_ms if jitter_ms is not None else Constant(value=0.0)
        self._jitter: Distribution | None = (
            None if isinstance(jitter, Constant) and jitter.value == 0.0 else jitter
        )
        self._group: list[int] | None = None  # partition group per node, None = healed
        self.sent_messages = 0
        self.sent_bytes = 0
        self.dropped = 0
        self.last_drop = ""

    def latency(self, src: int, dst: int) -> float:
        base = self.latency_s[self.site_of[src]][self.site_of[dst]]
        if self._jitter is None:
            return base
        return base + self._jitter.sample(self._rng) / 1000.0

    # -- partitions -----------------------------------------------------------------------

    def partition(self, group_of: Sequence[int]) -> None:
        if len(group_of) != len(self.site_of):
            raise ValueError("one group label per node")
        self._group = list(group_of)

    def heal(self) -> None:
        self._group = None

    def reachable(self, src: int, dst: int) -> bool:
        g = self._group
        return g is None or g[src] == g[dst]

    @property
    def partitioned(self) -> bool:
        return self._group is not None

    # -- transmission ---------------------------------------------------------------------

    def transmit(self, src: int, dst: int, size_bytes: int, now: float) -> Delivery:
        """Occupy src's uplink and dst's downlink for one message; when does it land?"""
        arrival = self.arrival(src, dst, size_bytes, now)
        return Delivery(arrival, "" if arrival is not None else self.last_drop)

    def arrival(self, src: int, dst: int, size_bytes: int, now: float) -> float | None:
        """``transmit`` without the result object (the driver's per-message hot path):
        the arrival time, or None when dropped (why: ``last_drop``)."""
        self.sent_messages += 1
        self.sent_bytes += size_bytes
        if size_bytes <= self.control_max_bytes:
            up_free, down_free = self.control_up_free_at, self.control_down_free_at
        else:
            up_free, down_free = self.uplink_free_at, self.downlink_free_at
        bits = 8.0 * size_bytes
        up_start = up_free[src]
        if up_start < now:
            up_start = now
        up_end = up_start + bits / self.uplink_bps[src]
        up_free[src] = up_end
        g = self._group
        if g is not None and g[src] != g[dst]:
            self._drop("partition")
            return None
        if self.loss and self._rng.random() < self.loss:
            self._drop("loss")
            return None
        lat = self.latency_s[self.site_of[src]][self.site_of[dst]]
        if self._jitter is not None:
            lat += self._jitter.sample(self._rng) / 1000.0
        if lat == math.inf:
            self._drop("unreachable")
            return None
        down_start = max(up_start + lat, down_free[dst])
        arrival = max(down_start + bits / self.downlink_bps[dst], up_end + lat)
        down_free[dst] = arrival
        return arrival

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self.last_drop = reason


def latency_matrix_ms_to_s(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    return [[v / 1000.0 for v in row] for row in matrix]


def graph_latency_s(graph: object, hop_latency_ms: float) -> tuple[list[list[float]], int]:
    """All-pairs shortest-path latency over a networkx graph whose vertices are sites.

    Edges may carry ``latency_ms``; otherwise each hop costs ``hop_latency_ms``. Unreachable
    pairs (a disconnected graph) get infinite latency, i.e. they never talk directly.
    """
    import networkx as nx

    g = nx.convert_node_labels_to_integers(graph, ordering="sorted")
    for _, _, data in g.edges(data=True):
        data.setdefault("latency_ms", hop_latency_ms)
    n = g.number_of_nodes()
    out = [[math.inf] * n for _ in range(n)]
    for src, lengths in nx.all_pairs_dijkstra_path_length(g, weight="latency_ms"):
        for dst, ms in lengths.items():
            out[src][dst] = float(ms) / 1000.0
    return out, n
