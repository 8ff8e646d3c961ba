"""The network model: latency, jitter, fairly shared bandwidth, loss, partitions.

Two lanes per node, because real transports give each transfer its own stream:

* **bulk** (contributions, state responses: anything above ``control_max_bytes``, 64 KiB by
  default) goes through ``sim.links.FairLinks``: concurrent transfers share the sender's
  uplink and the receiver's downlink fairly, a slow sender only takes the bandwidth it can
  use, and a transfer nobody needs any more is cancelled (see that module for the model and
  why it is computed with virtual clocks: one heap operation per link per transfer, one
  wake-up per burst of equal-size copies).
* **control** (heartbeats, state requests, goodbyes, small models' contributions) has its own
  FIFO clocks per node, computed analytically at send time (one arrival per message; a burst
  between ``begin`` and ``commit`` queues its arrivals as one SimPy entry, sim/bursts.py):

      up_start   = max(now, control_up_free_at[src])
      up_end     = up_start + bits / uplink_bps[src]
      down_start = max(up_start + latency, control_down_free_at[dst])
      arrival    = max(down_start + bits / downlink_bps[dst], up_end + latency)

  A 300-byte heartbeat does not wait 100 s behind a bulk upload on a real link (the kernel
  interleaves the streams' packets); without the lane, heartbeats queued behind 248 MB
  contributions on 20 Mbit/s uplinks and the protocol evicted thousands of healthy peers
  (wan-heterogeneous). Control bytes are too few to slow bulk transfers, so bulk ignores them.

Loss is what TCP makes of it. A bulk transfer is never dropped for loss: TCP retransmits
the lost packets, and what the protocol sees is a later arrival. With SACK a window that
lost packets is recovered in about one more round trip, so a transfer of ``w`` windows
(``w = bits / (rate * rtt)``, rate the smaller of the sender's uplink and the receiver's
downlink, rtt twice the one-way latency) is delivered ``w * q * rtt`` later, where ``q``
is the chance that a window of ``rate * rtt`` bits loses at least one 1,448-byte packet:
an expected value, not a draw, so a lossy link costs no random draws per bulk transfer.
(Measured, issue 15: dropping whole 614 KB updates at 1% loss held quorum-1.0 rounds for
their 20 s timeout; the real nodes over the same lossy links lost none.) A control message
is still dropped with the loss probability: heartbeats are periodic and the protocol is
built to survive a missed one, so the lane keeps its cheap model.

Bulk transfers also pay the real bulk plane's handshake before their first byte:
``bulk_setup_rtts`` round trips (runtime/net/bulk.py: the stream's protocol negotiation,
OFFER/REPLY, the direct data connection), 0 by default (the model before issue 15), and,
with ``cpu_bps``, the transport CPU at both ends (sim/links.py).

A burst's copies do not share the sender's uplink evenly in the real bulk plane (``lead_seed``,
off by default). The sender's access link has one FIFO queue (a home router's buffer; tc tbf on
the twin): the copy whose handshake ends first fills it with its data, and the other copies'
handshake packets (stream negotiation, OFFER/REPLY, the data connection) wait behind that data,
and their data starts after it. Measured (issue 15): raw TCP through the twin's emulated WAN,
five 614 KB copies at 10 Mbit/s, the first done at 0.60 s, the other four together at 2.64 s;
in real nodes' bursts the copies after the first start their data about one copy's link time
after it (0.10 s at 40 Mbit/s, where it is 0.12 s; 0.41-0.53 s at 10 Mbit/s, where it is 0.49
s), and set-ups take up to 3x their idle time when they meet loaded links. Processor sharing
instead sent every copy together, so every receiver closed its round at the same instant: the
sim ran in lock step (round times within 3% of each other) where real rounds spread (p10 half
the median, p90 1.35x at three nodes), and it was 0.60-0.63x the real round time at three nodes
on 10 Mbit/s links. The model: one copy of the burst, drawn with the sender's own seeded
generator, joins the links at once; the others join when the uplink would have sent the lead
alone (its bits over the uplink rate) plus their own set-up round trips (``bulk_setup_rtts``,
paid again because they ran behind the lead's data), and then share the uplink; every copy's
landing still adds the handshake (above). The second term reproduces the round, not the phases:
the others were measured starting 0.10 s (40 Mbit/s) and 0.41 s (10 Mbit/s, 3 nodes) after the
lead, where the model starts them 0.27 s and 0.85 s after it; the real rounds spend that time
in set-ups inflated for every copy (+0.2 s at 10 Mbit/s: handshake packets behind data in the
FIFO) and in downlinks shared by out-of-step senders, which this model does not have. Effect on
the calibration twin's median round time at 10 Mbit/s: 0.60-0.64x of the real one before,
0.90-0.97x with it (0.63x with the lead's link time alone as the wait); at 40 Mbit/s and in
CPU-bound runs +3-6%. Real runs' round-time spread is still not matched (too wide below the
median at 3 nodes; too narrow at 6 CPU-bound nodes: per-node CPU shares).

Partitions are group labels per node: a message across the cut is dropped when sent, bulk
transfers crossing it are cancelled when it opens, and a delivery across it is discarded by
the driver (``reachable``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

import simpy

from swarm_tune.sim.bursts import Arrival, Burst, event_ids
from swarm_tune.sim.distributions import Constant, Distribution
from swarm_tune.sim.links import Deliver, FairLinks, Post

CONTROL_MAX_BYTES = 64 * 1024  # messages up to this size use the control lane
MSS_BITS = 8 * 1448  # a TCP segment's payload on an Ethernet path


class _Waiting:
    """A bulk copy waiting for its burst's lead copy before it joins the links; ``wait`` is
    how long after the burst (module docstring)."""

    __slots__ = ("bits", "dst", "key", "lat", "src", "ticket", "value", "wait")

    def __init__(
        self,
        src: int,
        dst: int,
        bits: float,
        lat: float,
        key: int | None,
        value: object,
        wait: float,
    ) -> None:
        self.wait = wait
        self.src = src
        self.dst = dst
        self.bits = bits
        self.lat = lat
        self.key = key
        self.value = value
        self.ticket = 0


class Network:
    """Per-node links and the site-to-site latency matrix (seconds), in ``env``'s time.

    ``deliver`` is the SimPy callback of every arrival; its event's value is the ``value``
    given to ``send``."""

    def __init__(
        self,
        env: simpy.Environment,
        site_of: Sequence[int],
        latency_s: Sequence[Sequence[float]],
        uplink_bps: Sequence[float],
        downlink_bps: Sequence[float],
        rng: random.Random,
        deliver: Deliver,
        jitter_ms: Distribution | None = None,
        loss: float = 0.0,
        control_max_bytes: int = CONTROL_MAX_BYTES,
        bulk_setup_rtts: float = 0.0,
        cpu_bps: Sequence[float] | None = None,
        post: Post | None = None,
        lead_seed: str | None = None,
        cpu_shared: Sequence[tuple[Sequence[int], float]] = (),
    ) -> None:
        n = len(site_of)
        if not (len(uplink_bps) == len(downlink_bps) == n):
            raise ValueError("one uplink and downlink rate per node")
        if any(b <= 0 for b in uplink_bps) or any(b <= 0 for b in downlink_bps):
            raise ValueError("bandwidths must be positive")
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.env = env
        self.site_of = list(site_of)
        self.latency_s = [list(row) for row in latency_s]
        self.uplink_bps = list(uplink_bps)
        self.downlink_bps = list(downlink_bps)
        self.bulk = FairLinks(env, uplink_bps, downlink_bps, deliver, cpu_bps, post, cpu_shared)
        # Partitioned runs (sim/pdes_world.py): arrivals are handed to ``post`` (time, value)
        # instead of being scheduled here, and loss/jitter draws come from the sender's own
        # generator (``node_rngs``), so that no draw depends on who else shares the process.
        self._post = post
        self.node_rngs: Sequence[random.Random | None] | None = None
        self.control_up_free_at = [0.0] * n  # control lane (see module docstring)
        self.control_down_free_at = [0.0] * n
        self.control_max_bytes = control_max_bytes
        self.loss = loss
        self.bulk_setup_rtts = bulk_setup_rtts
        # One generator per sender (created at its first burst), so that which copy leads
        # depends on nothing but that sender's bursts, also in a partitioned run.
        self._lead_seed = lead_seed
        self._lead_rngs: dict[int, random.Random] = {}
        # Copies waiting for their burst's lead copy (module docstring), by ticket.
        self._waiting: dict[int, _Waiting] = {}
        self._tickets = 0
        self.waiting_cancelled = 0
        self._deliver = deliver
        self._rng = rng
        jitter = jitter_ms if jitter_ms is not None else Constant(value=0.0)
        self._jitter: Distribution | None = (
            None if isinstance(jitter, Constant) and jitter.value == 0.0 else jitter
        )
        self._group: list[int] | None = None  # partition group per node, None = healed
        self._burst: list[Arrival] | None = None  # control arrivals since ``begin``
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
        g = list(group_of)
        self._group = g
        self.bulk.cancel_where(lambda s, d: g[s] != g[d], self.env.now)
        self._drop_waiting(lambda w: g[w.src] != g[w.dst])

    def heal(self) -> None:
        self._group = None

    def reachable(self, src: int, dst: int) -> bool:
        g = self._group
        return g is None or g[src] == g[dst]

    @property
    def partitioned(self) -> bool:
        return self._group is not None

    # -- links --------------------------------------------------------------------------

    def set_bandwidth(self, node: int, up_bps: float, down_bps: float) -> None:
        """The node's access link changes class (transfers in flight continue at the new rates)."""
        self.bulk.set_capacity(node, up_bps, down_bps, self.env.now)
        self.uplink_bps[node] = up_bps
        self.downlink_bps[node] = down_bps

    def disconnect(self, node: int) -> None:
        """The node went offline: its bulk transfers, both ways, stop."""
        self.bulk.cancel_node(node, self.env.now)
        self._drop_waiting(lambda w: node in (w.src, w.dst))

    def supersede(self, src: int, key: int) -> None:
        """src no longer needs its bulk transfers keyed below ``key`` (an older round's)."""
        self.bulk.cancel_older(src, key, self.env.now)
        self._drop_waiting(lambda w: w.src == src and w.key is not None and w.key < key)

    # -- transmission ---------------------------------------------------------------------

    def send(
        self, src: int, dst: int, size_bytes: int, value: object, key: int | None = None
    ) -> bool:
        """Start one message; False when it is dropped at once (why: ``last_drop``).

        Bulk messages only start here: call ``commit`` after the last message of a burst."""
        return self.send_all(src, ((dst, value),), size_bytes, key) == 1

    def send_all(
        self,
        src: int,
        targets: Iterable[tuple[int, object]],
        size_bytes: int,
        key: int | None = None,
    ) -> int:
        """``send`` the same-sized message to each (dst, value) in order; how many were not
        dropped at once. One call per burst: what is the same for every copy (the sender's
        rates and latency row, the lane) is looked up once, not once per receiver."""
        env, now, rng, loss, jitter = self.env, self.env.now, self._rng, self.loss, self._jitter
        if self.node_rngs is not None:
            rng = self.node_rngs[src] or rng
        post = self._post
        g = self._group
        bulk = size_bytes > self.control_max_bytes
        lossy = not bulk and bool(loss)
        row = self.latency_s[self.site_of[src]]
        site_of, down_bps = self.site_of, self.downlink_bps
        down_free, up_free = self.control_down_free_at, self.control_up_free_at
        bits = 8.0 * size_bytes
        up_time = bits / self.uplink_bps[src]
        burst = self._burst
        ids = event_ids(env)
        plain = not bulk and not lossy and jitter is None and g is None and post is None
        if burst is not None and plain:  # the usual burst: nothing to draw, cut or post
            return self._control_burst(src, targets, size_bytes, burst, ids)
        started = sent = 0
        held: list[_Waiting] | None = [] if bulk and self._lead_seed is not None else None
        for dst, value in targets:
            sent += 1
            if g is not None and g[src] != g[dst]:
                self._drop("partition")
                continue
            lost = lossy and rng.random() < loss
            lat = row[site_of[dst]]
            if jitter is not None:
                lat += jitter.sample(rng) / 1000.0
            if lat == math.inf:
                self._drop("unreachable")
                continue
            if bulk:
                base = lat
                if loss or self.bulk_setup_rtts:
                    lat += self._bulk_extra_s(src, dst, bits, lat)
                if held is None:
                    self.bulk.start(src, dst, bits, lat, key, value, now)
                else:
                    wait = up_time + self.bulk_setup_rtts * 2.0 * base
                    held.append(_Waiting(src, dst, bits, lat, key, value, wait))
            else:
                up_start = up_free[src]
                if up_start < now:
                    up_start = now
                up_end = up_start + up_time
                up_free[src] = up_end
                if not lost and post is not None:
                    post(up_end + lat, value)  # partitioned: no receiver downlink (pdes_world)
                elif not lost:
                    down_start = max(up_start + lat, down_free[dst])
                    arrival = max(down_start + bits / down_bps[dst], up_end + lat)
                    down_free[dst] = arrival
                    if burst is None:
                        ev = simpy.Timeout(env, arrival - now, value)
                        ev.callbacks.append(self._deliver)
                    else:  # the time and event id the Timeout would have had (sim/bursts.py)
                        burst.append((now + (arrival - now), next(ids), value))
            if lost:
                self._drop("loss")
                continue
            started += 1
        if held:
            self._lead_first(held, now)
        self.sent_messages += sent
        self.sent_bytes += sent * size_bytes
        return started

    def _control_burst(
        self,
        src: int,
        targets: Iterable[tuple[int, object]],
        size_bytes: int,
        burst: list[Arrival],
        ids: Iterator[int],
    ) -> int:
        """``send_all``'s loop for a control-lane burst with nothing to draw or cut (no loss,
        no jitter, no partition): the same arithmetic in the same order, so the same
        arrival times and event ids, without the tests the general loop makes per copy."""
        now = self.env.now
        row = self.latency_s[self.site_of[src]]
        site_of, down_bps, down_free = self.site_of, self.downlink_bps, self.control_down_free_at
        bits = 8.0 * size_bytes
        up_time = bits / self.uplink_bps[src]
        up_free = self.control_up_free_at
        up_start = up_free[src]
        if up_start < now:
            up_start = now
        append = burst.append
        inf = math.inf
        sent = started = 0
        for dst, value in targets:
            sent += 1
            lat = row[site_of[dst]]
            if lat == inf:
                self._drop("unreachable")
                continue
            up_end = up_start + up_time
            # max() written out: max(x, y) is x unless y > x
            down_start = up_start + lat
            free = down_free[dst]
            if free > down_start:
                down_start = free
            arrival = down_start + bits / down_bps[dst]
            last_bit = up_end + lat
            if last_bit > arrival:
                arrival = last_bit
            down_free[dst] = arrival
            # the time and event id the Timeout would have had (sim/bursts.py)
            append((now + (arrival - now), next(ids), value))
            up_start = up_end
            started += 1
        if started:
            up_free[src] = up_start
        self.sent_messages += sent
        self.sent_bytes += sent * size_bytes
        return started

    def _lead_first(self, held: list[_Waiting], now: float) -> None:
        """One copy of the burst starts now, the others after its data and their set-up
        (module docstring): one wake-up per distinct wait (one for equal latencies)."""
        src = held[0].src
        rng = self._lead_rngs.get(src)
        if rng is None:
            rng = self._lead_rngs[src] = random.Random(f"{self._lead_seed}:{src}")
        lead = held.pop(rng.randrange(len(held)))
        self.bulk.start(lead.src, lead.dst, lead.bits, lead.lat, lead.key, lead.value, now)
        by_wait: dict[float, list[_Waiting]] = {}
        for w in held:
            self._tickets += 1
            w.ticket = self._tickets
            self._waiting[w.ticket] = w
            by_wait.setdefault(w.wait, []).append(w)
        for wait, group in by_wait.items():
            simpy.Timeout(self.env, wait, group).callbacks.append(self._lead_done)

    def _lead_done(self, ev: simpy.Event) -> None:
        now = self.env.now
        started = False
        group = cast("list[_Waiting]", ev.value)
        for w in group:
            if self._waiting.pop(w.ticket, None) is None:
                continue  # cancelled while it waited
            self.bulk.start(w.src, w.dst, w.bits, w.lat, w.key, w.value, now)
            started = True
        if started:
            self.bulk.commit(now)

    def _drop_waiting(self, cut: Callable[[_Waiting], bool]) -> None:
        """Cancel the copies still waiting for their lead that ``cut`` selects."""
        if not self._waiting:
            return
        gone = [t for t, w in self._waiting.items() if cut(w)]
        for t in gone:
            del self._waiting[t]
        self.waiting_cancelled += len(gone)

    def _bulk_extra_s(self, src: int, dst: int, bits: float, lat: float) -> float:
        """The handshake's round trips and the expected loss recovery (module docstring)."""
        rtt = 2.0 * lat
        extra = self.bulk_setup_rtts * rtt
        if self.loss and rtt > 0:
            window = min(self.uplink_bps[src], self.downlink_bps[dst]) * rtt
            windows = bits / window
            q = 1.0 - (1.0 - self.loss) ** (min(bits, window) / MSS_BITS)
            extra += math.ceil(windows) * q * rtt
        return extra

    def begin(self) -> None:
        """Start a burst: control-lane arrivals of the ``send`` calls up to ``commit`` share
        one entry in SimPy's queue (sim/bursts.py); without it each is its own event."""
        self._burst = []

    def commit(self) -> None:
        """End of a burst of ``send`` calls: bulk transfers take their shares, the control
        lane's arrivals are queued."""
        burst, self._burst = self._burst, None
        if burst:
            Burst(self.env, burst, self._deliver)
        self.bulk.commit(self.env.now)

    @property
    def cancelled(self) -> int:
        return self.bulk.cancelled + self.waiting_cancelled

    @property
    def cancelled_bytes(self) -> int:
        return int(self.bulk.cancelled_bits / 8)

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
