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
        self.uplink_free_at = [0.0] * n
        self.downlink_free_at = [0.0] * n
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
        self.sent_messages += 1
        self.sent_bytes += size_bytes
        bits = 8.0 * size_bytes
        up_start = max(now, self.uplink_free_at[src])
        up_end = up_start + bits / self.uplink_bps[src]
        self.uplink_free_at[src] = up_end
        if not self.reachable(src, dst):
            self.dropped += 1
            return Delivery(None, "partition")
        if self.loss and self._rng.random() < self.loss:
            self.dropped += 1
            return Delivery(None, "loss")
        lat = self.latency(src, dst)
        if math.isinf(lat):
            self.dropped += 1
            return Delivery(None, "unreachable")
        down_start = max(up_start + lat, self.downlink_free_at[dst])
        arrival = max(down_start + bits / self.downlink_bps[dst], up_end + lat)
        self.downlink_free_at[dst] = arrival
        return Delivery(arrival)


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
