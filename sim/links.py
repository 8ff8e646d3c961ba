"""Bulk transfers on shared links: fair sharing of every uplink and downlink in virtual time.

Why: a FIFO per link (the previous model) let one slow transfer hold a receiver's downlink
until its last bit arrived, so a 250 MB update trickling from a 1 Mbit/s uplink (2,000 s)
delayed a fast message sent 1 s later to t = 2,002 s. Real transports run one TCP stream per
transfer and the kernel interleaves their packets: concurrent transfers share a link, and a
transfer limited elsewhere (by a slow sender) only takes the bandwidth it can use.

The model, per node, with one heap operation per link per transfer ("flow"):

* **uplink**: processor sharing. Each of the n flows a node is sending gets C_up / n. Exact
  processor sharing is computed with a virtual clock V (the service a flow present since the
  clock started would have received): dV/dt = C / n, and a flow that started when the clock
  read V0 finishes when V reaches V0 + bits. Its finish tag never changes, so starting or
  ending a flow is a heap push or pop, and the link needs ONE pending SimPy wake-up, for its
  smallest tag. The protocol's usual send (one update to k peers at once: equal sizes, equal
  tags) costs one wake-up for all k copies.
* **downlink**: water-filling over the flows' caps, a flow's cap being its sender's equal
  share when its burst started. Flows capped below the water level L are *uplink-limited*:
  each reserves its cap of the downlink while it is being sent. The others are
  *downlink-limited* and share what the reservations leave by processor sharing (a second
  virtual clock), each at L = (C_down - reserved) / n. Adding or removing a flow moves L, and
  flows cross between the two sets (two small heaps of caps keep that O(log n)). A flow
  lands (plus propagation latency) when every link it uses has served all its bits.

This is max-min fair (what TCP flows converge to) for one flow alone, any number of flows on
one uplink, any flows into one downlink from senders whose shares do not change, and the
slow-sender case above (the fast flow gets C_down - 1 Mbit/s). To stay local (a change at a
link never ripples beyond the flows on it), it approximates in two ways: a flow's cap is
taken when its burst starts (when the sender's other flows finish, the flow is sent faster
than its reservation says, and the receiver's other flows are not slowed by the difference);
and a downlink-limited flow keeps its equal share of its sender's uplink (max-min would hand
the part it cannot use to the sender's other flows, which are therefore slower than max-min).

Cancellation: a transfer nobody needs any more (the sender superseded it with a newer round's
update, either end left, a partition cut the path) is removed from both links at once and
its bandwidth goes to the others (the driver decides what is superseded: sim/driver.py).
The bits it had already sent are counted as wasted (``cancelled_bits``).

Transport CPU (optional, off unless a compute class sets ``transport_s_per_mb``): a node's
event loop spends CPU on every byte it sends or receives, so a node with a fraction of a
core (sim-to-real calibration: N nodes on one machine) can be limited by its CPU, not its
link. Each such node gets one more processor-sharing server, of capacity ``cpu_bps`` (its
cores over its CPU seconds per bit), serving every flow it sends *and* receives; a flow
lands when its uplink, its downlink and the CPUs at both ends have all served its bits. The
servers run side by side like the uplink and downlink do (a CPU-limited flow still holds its
equal uplink share), the same approximation as above; a node with a free CPU has no server.

Nodes on one machine (``cpu_shared``; sim-to-real calibration's twin runs its N node
processes on one box) share its cores the way the OS does: by process, wasting none. A member
whose server has flows gets the machine's capacity (its members' ``cpu_bps`` summed) over the
number of busy members, at most one core (its event loop is one thread). With a fixed share
each, a node that had nothing to carry (stepping, or done with its round) left its share idle
while the others waited for theirs: measured on the twin (issue 15), the real nodes used
every core the machine left them (0.62 of 0.62 cores at lan40), and with fixed shares the
sim's median rounds came out 2.5-6% longer (re-sims of stored twins). The shares move only
when a member turns busy or idle: O(members) then, nothing per flow.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from typing import Any

import simpy

from swarm_tune.sim.bursts import Arrival, Burst, next_event_id

# A wake-up fires when the clock reaches a tag up to rounding: tags are sums of many floats.
TAG_TOLERANCE = 1e-9
# Stale cap entries (flows that finished while reserved) are swept once they outnumber the
# live ones by this much, so a downlink that never needs water-filling does not grow a heap.
SWEEP_SLACK = 32

Deliver = Callable[[simpy.Event], None]
Post = Callable[[float, Any], None]  # (arrival time, delivery value): a partitioned run's outbox
FlowEntry = tuple[float, int, "Flow"]  # (tag or cap, sequence number, flow)
BatchEntry = tuple[float, int, list["Flow"]]  # (finish tag, sequence number, equal-tag flows)


class Flow:
    """One bulk transfer in flight. ``value`` is what the delivery event carries."""

    __slots__ = (
        "bits",
        "cap",
        "cpu_left",
        "dcpu",
        "down_left",
        "down_tag",
        "dst",
        "key",
        "lat",
        "live",
        "reserved",
        "scpu",
        "seq",
        "src",
        "up_left",
        "up_tag",
        "value",
    )

    def __init__(
        self, seq: int, src: int, dst: int, bits: float, lat: float, key: int | None
    ) -> None:
        self.seq = seq
        self.src = src
        self.dst = dst
        self.bits = bits
        self.lat = lat
        self.key = key  # sender's ordering key (its round): older keys can be superseded
        self.value: Any = None
        self.live = True
        self.up_left = True  # the uplink still serves it
        self.up_tag = 0.0
        self.cap = 0.0  # its sender's share when its burst started (bit/s)
        self.reserved = False  # uplink-limited: holds ``cap`` of the downlink
        self.down_left = False  # downlink-limited: the downlink's processor sharing serves it
        self.down_tag = 0.0
        self.cpu_left = 0  # CPU servers (sender's, receiver's) still serving it
        self.scpu = -1.0  # its finish tag at the sender's CPU server, -1 when done or none
        self.dcpu = -1.0  # the same at the receiver's


class _Server:
    """Processor sharing in virtual time: ``v`` advances at (capacity - reserved) / n."""

    __slots__ = ("capacity", "n", "reserved", "t", "v", "version", "wake")

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.reserved = 0.0  # downlink: the sum of its reservations' caps
        self.v = 0.0  # virtual clock: bits served per flow
        self.t = 0.0  # when v was last brought up to date
        self.n = 0  # flows served by processor sharing
        self.version = 0  # bumped when the pending wake-up is replaced
        self.wake = math.inf  # when the pending wake-up fires

    def advance(self, now: float) -> None:
        n = self.n
        if n:
            free = self.capacity - self.reserved
            if free > 0.0:
                self.v += (now - self.t) * free / n
        self.t = now

    def top(self) -> tuple[float, int, object] | None:
        """The heap entry that finishes first (stale entries dropped on the way)."""
        raise NotImplementedError

    def top_tag(self) -> float | None:
        top = self.top()
        return None if top is None else top[0]

    def next_due(self) -> float:
        tag = self.top_tag()
        free = self.capacity - self.reserved
        if tag is None or not self.n or free <= 0.0:
            return math.inf
        return self.t + (tag - self.v) * self.n / free


class Uplink(_Server):
    """A sender's uplink. Heap entries are batches: the copies of one update sent to k peers
    at once share a finish tag, so they cost one heap entry and one wake-up."""

    __slots__ = ("heap",)

    def __init__(self, capacity: float) -> None:
        super().__init__(capacity)
        self.heap: list[BatchEntry] = []

    def top(self) -> BatchEntry | None:
        heap = self.heap
        while heap:
            tag, _, flows = heap[0]
            for f in flows:
                if f.live and f.up_left and f.up_tag == tag:
                    return heap[0]
            heapq.heappop(heap)  # every flow of the batch finished, left or was re-tagged
        return None


class Downlink(_Server):
    """A receiver's downlink: reservations of uplink-limited flows plus processor sharing of
    the rest, with the two heaps of caps water-filling needs (the largest reserved cap, the
    smallest shared one)."""

    __slots__ = ("heap", "ps_caps", "res_caps", "reservations")

    def __init__(self, capacity: float) -> None:
        super().__init__(capacity)
        self.heap: list[FlowEntry] = []  # finish tags of the processor-sharing flows
        self.reservations = 0
        self.res_caps: list[FlowEntry] = []  # max-heap (negated caps) of reservations
        self.ps_caps: list[FlowEntry] = []  # min-heap of the processor-sharing flows' caps

    def top(self) -> FlowEntry | None:
        heap = self.heap
        while heap:
            tag, _, f = heap[0]
            if f.live and f.down_left and f.down_tag == tag:
                return heap[0]
            heapq.heappop(heap)
        return None

    def reserve(self, f: Flow) -> None:
        f.reserved = True
        self.reserved += f.cap
        self.reservations += 1
        heapq.heappush(self.res_caps, (-f.cap, f.seq, f))

    def unreserve(self, f: Flow) -> None:
        f.reserved = False
        self.reservations -= 1
        if not self.reservations:
            self.reserved = 0.0  # no float residue
            self.res_caps.clear()
        else:
            self.reserved -= f.cap
            if len(self.res_caps) > 2 * self.reservations + SWEEP_SLACK:
                self.res_caps = [e for e in self.res_caps if e[2].reserved and e[2].live]
                heapq.heapify(self.res_caps)

    def max_reserved(self) -> FlowEntry | None:
        res = self.res_caps
        while res and not (res[0][2].live and res[0][2].reserved):
            heapq.heappop(res)
        return res[0] if res else None

    def min_shared(self) -> FlowEntry | None:
        ps = self.ps_caps
        while ps and not (ps[0][2].live and ps[0][2].down_left):
            heapq.heappop(ps)
        return ps[0] if ps else None


class Cpu(_Server):
    """A node's transport CPU: processor sharing over every flow it sends or receives."""

    __slots__ = ("heap", "node")

    def __init__(self, capacity: float, node: int) -> None:
        super().__init__(capacity)
        self.node = node
        self.heap: list[FlowEntry] = []

    def tag_of(self, f: Flow) -> float:
        return f.scpu if f.src == self.node else f.dcpu

    def top(self) -> FlowEntry | None:
        heap = self.heap
        while heap:
            tag, _, f = heap[0]
            if f.live and self.tag_of(f) == tag:
                return heap[0]
            heapq.heappop(heap)
        return None


class _Machine:
    """The CPU servers of the nodes on one machine: ``capacity`` (bit/s) split among the busy
    ones, at most ``core`` each (module docstring)."""

    __slots__ = ("capacity", "core", "servers")

    def __init__(self, servers: list[Cpu], core: float) -> None:
        self.servers = servers
        self.capacity = sum(c.capacity for c in servers)
        self.core = core


class FairLinks:
    """The bulk lane of every node: start flows, commit a burst, cancel, change capacity."""

    def __init__(
        self,
        env: simpy.Environment,
        uplink_bps: Sequence[float],
        downlink_bps: Sequence[float],
        deliver: Deliver,
        cpu_bps: Sequence[float] | None = None,
        post: Post | None = None,
        cpu_shared: Sequence[tuple[Sequence[int], float]] = (),
    ) -> None:
        """``cpu_shared``: (member nodes, one core's rate in bit/s) per machine whose cores its
        members share (module docstring); every member needs a CPU server."""
        self.env = env
        self._post = post  # set: landings go there instead of into SimPy's queue
        self.up = [Uplink(c) for c in uplink_bps]
        self.down = [Downlink(c) for c in downlink_bps]
        # Transport CPU servers (module docstring): None for a node whose CPU is free, and
        # no list at all when every node's is (the default: no cost per flow).
        self.cpu: list[Cpu | None] | None = None
        if cpu_bps is not None and any(c != math.inf for c in cpu_bps):
            if len(cpu_bps) != len(self.up) or any(c <= 0 for c in cpu_bps):
                raise ValueError("one positive CPU rate per node")
            self.cpu = [None if c == math.inf else Cpu(c, i) for i, c in enumerate(cpu_bps)]
        self._machine_of: dict[int, _Machine] = {}
        for members, core in cpu_shared:
            servers = [self.cpu[i] for i in members] if self.cpu is not None else []
            mine = [c for c in servers if c is not None]
            if not (core > 0 and members and len(mine) == len(members)):
                raise ValueError("a shared machine needs members with CPU servers and a core > 0")
            machine = _Machine(mine, core)
            for i in members:
                self._machine_of[i] = machine
        self._deliver = deliver
        n = len(self.up)
        self._out: list[dict[int, Flow]] = [{} for _ in range(n)]  # in flight, by sender
        self._in: list[dict[int, Flow]] = [{} for _ in range(n)]  # by receiver
        self._new: list[Flow] = []  # started, not yet committed
        self._batch: BatchEntry | None = None  # the uplink entry the burst is filling
        self._dirty: list[_Server] = []  # links whose wake-up may have moved
        # Deliveries of the flows landing at one wake-up: one SimPy queue entry (a Burst,
        # sim/bursts.py) for the k copies of an update that finish together, not k.
        self._landing: list[Arrival] = []
        self._seq = 0
        self.cancelled = 0
        self.cancelled_bits = 0.0  # bits already sent by cancelled flows: wasted work
        # The same per sender, when asked for (a partitioned run sums it exactly: sim/pdes.py).
        self.wasted_by_src: dict[int, float] | None = None

    # -- starting ---------------------------------------------------------------------

    def start(
        self,
        src: int,
        dst: int,
        bits: float,
        lat: float,
        key: int | None,
        value: Any,
        now: float,
    ) -> None:
        """Put one flow on src's uplink; ``commit`` finishes the burst (see there)."""
        up = self.up[src]
        up.advance(now)
        self._seq += 1
        f = Flow(self._seq, src, dst, bits, lat, key)
        f.value = value
        tag = f.up_tag = up.v + bits
        batch = self._batch
        if batch is not None and batch[0] == tag and batch[2][0].src == src:
            batch[2].append(f)
        else:
            self._batch = batch = (tag, f.seq, [f])
            heapq.heappush(up.heap, batch)
            self._dirty.append(up)
        up.n += 1
        self._out[src][f.seq] = f
        self._in[dst][f.seq] = f
        self._new.append(f)
        cpu = self.cpu
        if cpu is not None:
            self._cpu_join(f, cpu[src], now)
            self._cpu_join(f, cpu[dst], now)

    def _cpu_join(self, f: Flow, c: Cpu | None, now: float) -> None:
        if c is None:
            return
        c.advance(now)
        tag = c.v + f.bits
        if f.src == c.node:
            f.scpu = tag
        else:
            f.dcpu = tag
        f.cpu_left += 1
        c.n += 1
        heapq.heappush(c.heap, (tag, f.seq, f))
        self._dirty.append(c)
        if c.n == 1 and self._machine_of:
            self._share_machine(c.node, now)

    def _share_machine(self, node: int, now: float) -> None:
        """A member of a shared machine turned busy or idle: its busy members' new rates."""
        m = self._machine_of.get(node)
        if m is None:
            return
        busy = [c for c in m.servers if c.n]
        if not busy:
            return
        rate = min(m.core, m.capacity / len(busy))
        for c in busy:
            if c.capacity != rate:
                c.advance(now)
                c.capacity = rate
                self._dirty.append(c)

    def commit(self, now: float) -> None:
        """Place the burst's flows on their downlinks and (re)schedule the links' wake-ups.

        Done once per burst, so every copy's cap is the sender's final share C_up / n."""
        for f in self._new:
            if not f.live:
                continue
            up = self.up[f.src]
            cap = f.cap = up.capacity / up.n
            d = self.down[f.dst]
            if not d.n and d.reserved + cap <= d.capacity:
                d.reserve(f)  # room for every cap: nothing shares, no clock to move
            else:
                d.advance(now)
                d.reserve(f)
                self._rebalance(d, now)
        self._new.clear()
        self._batch = None
        self._reschedule(now)

    # -- downlink water-filling ---------------------------------------------------------------

    def _rebalance(self, d: Downlink, now: float) -> None:
        """Water-filling at one downlink (its clock already advanced to ``now``): flows
        capped above the level L share by processor sharing, the others keep their caps."""
        while True:
            big = d.max_reserved()
            free = d.capacity - d.reserved
            if big is not None and (-big[0] * d.n > free if d.n else d.reserved > d.capacity):
                heapq.heappop(d.res_caps)  # the largest cap is above the level: it shares
                f = big[2]
                d.unreserve(f)
                up = self.up[f.src]
                up.advance(now)
                f.down_tag = d.v + max(0.0, f.up_tag - up.v)  # bits not yet through
                f.down_left = True
                heapq.heappush(d.heap, (f.down_tag, f.seq, f))
                heapq.heappush(d.ps_caps, (f.cap, f.seq, f))
                d.n += 1
                continue
            small = d.min_shared()
            if small is not None and small[0] * d.n < free:
                heapq.heappop(d.ps_caps)  # the smallest cap is below the level: reserve it
                f = small[2]
                f.down_left = False
                d.n -= 1
                if not d.n:
                    d.ps_caps.clear()
                d.reserve(f)
                self._backpressure(f, d, now)
                continue
            break
        self._dirty.append(d)

    def _backpressure(self, f: Flow, d: Downlink, now: float) -> None:
        """f leaves processor sharing at d: its sender could only push what d took (TCP's
        back-pressure), so what is left to send is what the receiver still lacks."""
        up = self.up[f.src]
        up.advance(now)
        lacking = f.down_tag - d.v
        if lacking > (f.up_tag - up.v if f.up_left else 0.0):
            if not f.up_left:
                f.up_left = True
                up.n += 1
            f.up_tag = up.v + lacking
            self._seq += 1
            heapq.heappush(up.heap, (f.up_tag, self._seq, [f]))
            self._dirty.append(up)

    # -- the clock ----------------------------------------------------------------------

    def _reschedule(self, now: float) -> None:
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        for link in dirty:
            due = link.next_due()
            if link.wake == due:
                continue  # the pending wake-up is still right (or none is needed)
            link.version += 1
            link.wake = due
            if due == math.inf:
                continue
            ev = simpy.Timeout(self.env, max(0.0, due - now), (link, link.version))
            ev.callbacks.append(self._on_wake)

    def _on_wake(self, ev: simpy.Event) -> None:
        link, version = ev._value
        if version != link.version:
            return  # replaced by a later wake-up
        now = self.env.now
        link.wake = math.inf
        link.advance(now)
        if isinstance(link, Uplink):
            self._uplink_done(link, now)
        elif isinstance(link, Downlink):
            self._downlink_done(link, now)
        else:
            self._cpu_done(link, now)
        if self._landing:
            if self._post is None:
                Burst(self.env, self._landing, self._deliver)
            else:
                for at, _, value in self._landing:
                    self._post(at, value)
            self._landing = []
        self._dirty.append(link)
        self._reschedule(now)

    def _due(self, link: _Server, tag: float, first: bool) -> bool:
        # The first tag is due by construction (any change to the heap's top or to the rate
        # moved the wake-up); rounding may leave the clock a hair short of it.
        return first or tag <= link.v + TAG_TOLERANCE * max(1.0, tag)

    def _uplink_done(self, up: Uplink, now: float) -> None:
        first = True
        while (top := up.top()) is not None and self._due(up, top[0], first):
            first = False
            heapq.heappop(up.heap)
            tag = top[0]
            for f in top[2]:
                if not (f.live and f.up_left and f.up_tag == tag):
                    continue
                up.n -= 1
                f.up_left = False
                if f.reserved:
                    d = self.down[f.dst]
                    if d.n:
                        d.advance(now)
                        d.unreserve(f)
                        self._rebalance(d, now)
                    else:
                        d.unreserve(f)
                if not f.down_left and not f.cpu_left:
                    self._land(f)

    def _downlink_done(self, d: Downlink, now: float) -> None:
        first = True
        while (top := d.top()) is not None and self._due(d, top[0], first):
            first = False
            heapq.heappop(d.heap)
            f = top[2]
            d.n -= 1
            f.down_left = False
            if not f.up_left and not f.cpu_left:
                self._land(f)
        if not d.n:
            d.ps_caps.clear()
        self._rebalance(d, now)

    def _cpu_done(self, c: Cpu, now: float) -> None:
        first = True
        while (top := c.top()) is not None and self._due(c, top[0], first):
            first = False
            heapq.heappop(c.heap)
            f = top[2]
            self._cpu_leave(f, c, now)
            if not f.cpu_left and not f.up_left and not f.down_left:
                self._land(f)

    def _cpu_leave(self, f: Flow, c: Cpu, now: float) -> None:
        c.n -= 1
        f.cpu_left -= 1
        if f.src == c.node:
            f.scpu = -1.0
        else:
            f.dcpu = -1.0
        if not c.n and self._machine_of:
            self._share_machine(c.node, now)

    def _land(self, f: Flow) -> None:
        f.live = False
        del self._out[f.src][f.seq]
        del self._in[f.dst][f.seq]
        env = self.env  # the time and event id its own Timeout would have had
        self._landing.append((env.now + f.lat, next_event_id(env), f.value))
        f.value = None

    # -- cancelling and changing links ------------------------------------------------------

    def _cancel(self, f: Flow, now: float) -> None:
        f.live = False
        del self._out[f.src][f.seq]
        del self._in[f.dst][f.seq]
        f.value = None
        self.cancelled += 1
        wasted = f.bits
        if f.up_left:
            up = self.up[f.src]
            up.advance(now)
            up.n -= 1
            wasted -= max(0.0, f.up_tag - up.v)
            self._dirty.append(up)
        self.cancelled_bits += wasted
        if self.wasted_by_src is not None:
            self.wasted_by_src[f.src] = self.wasted_by_src.get(f.src, 0.0) + wasted
        if f.cpu_left:
            assert self.cpu is not None
            for c in (self.cpu[f.src], self.cpu[f.dst]):
                if c is not None and c.tag_of(f) >= 0.0:
                    c.advance(now)
                    self._cpu_leave(f, c, now)
                    self._dirty.append(c)
        if f.reserved or f.down_left:
            d = self.down[f.dst]
            d.advance(now)
            if f.reserved:
                d.unreserve(f)
            else:
                f.down_left = False
                d.n -= 1
            self._rebalance(d, now)

    def cancel_older(self, src: int, key: int, now: float) -> int:
        """Cancel src's flows whose key is below ``key`` (superseded); how many."""
        out = self._out[src]
        if not out:
            return 0
        stale = [f for f in out.values() if f.key is not None and f.key < key]
        return self._cancel_all(stale, now)

    def cancel_node(self, node: int, now: float) -> int:
        """Cancel everything ``node`` sends or receives (it went offline)."""
        flows = list(self._out[node].values())
        flows += [f for f in self._in[node].values() if f.src != node]
        return self._cancel_all(flows, now)

    def cancel_outgoing(self, node: int, now: float) -> int:
        """Cancel what ``node`` sends (a partitioned run: what it receives is cut by the
        receiver's own world, which drops it on arrival)."""
        return self._cancel_all(list(self._out[node].values()), now)

    def cancel_where(self, cut: Callable[[int, int], bool], now: float) -> int:
        """Cancel every flow whose (src, dst) satisfies ``cut`` (a partition opened)."""
        flows = [f for out in self._out for f in out.values() if cut(f.src, f.dst)]
        return self._cancel_all(flows, now)

    def _cancel_all(self, flows: list[Flow], now: float) -> int:
        for f in flows:
            self._cancel(f, now)
        if flows:
            self._reschedule(now)
        return len(flows)

    def set_capacity(self, node: int, up_bps: float, down_bps: float, now: float) -> None:
        """A node's link changes class; flows in flight continue at the new rates."""
        if up_bps <= 0 or down_bps <= 0:
            raise ValueError("bandwidths must be positive")
        up, down = self.up[node], self.down[node]
        up.advance(now)
        up.capacity = up_bps
        self._dirty.append(up)
        down.advance(now)
        down.capacity = down_bps
        self._rebalance(down, now)
        self._reschedule(now)

    def in_flight(self, node: int) -> int:
        """Flows ``node`` is sending now (tests and reports)."""
        return len(self._out[node])
