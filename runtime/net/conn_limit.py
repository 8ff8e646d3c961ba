"""Admission of new inbound libp2p connections, per source IP, before any handshake.

Why: peer ids are free, so every inbound connection may be a fresh key, and each one costs
the node a Noise handshake (X25519 + an Ed25519 signature), a yamux session and an
identify exchange before it can be judged (about 19 ms of CPU each, measured in the hostile
suite). One machine looping over fresh keys could make a node spend most of a core on
strangers. py-libp2p's own limits are a total cap on connections and allow/deny lists.

So a connection is admitted, at accept time and before a byte is read, only if

* its source (an IPv4 address, or an IPv6 /64, what one host or subscriber can cheaply
  vary within) has a token in its bucket: ``rate_per_ip`` new connections per second with a
  burst of ``burst_per_ip``;
* the node-wide bucket has one (``rate_total`` / ``burst_total``), which bounds the work a
  flood from many addresses can cause;
* that source holds fewer than ``max_per_ip`` live inbound connections.

Refused connections are closed unread and counted by reason (``conn_rate_ip``,
``conn_rate_total``, ``conn_per_ip``; nobody is blamed: there is no peer id yet). Honest
peers open one connection each and keep it, far below any of these; a loopback test swarm
shares one IP, which the defaults leave room for. The bucket table is bounded: over
``MAX_SOURCES`` the source refilled longest ago is forgotten (a forgotten source starts
again with a full burst, which the node-wide bucket still bounds).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from swarm_tune.runtime.net.refusals import Refusals

log = logging.getLogger(__name__)

MAX_SOURCES = 4096
#: How often a live inbound connection's socket is checked for having closed.
CLOSED_POLL_S = 1.0
IPV6_PREFIX = 64


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; the state of each bucket is a :class:`Bucket`."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst

    def take(self, bucket: Bucket, now: float) -> bool:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class BucketTable:
    """One :class:`TokenBucket` budget per key (a source IP, a peer id), at most ``max_keys``
    of them: over that the key used longest ago is forgotten and starts again with a full
    burst when it comes back. Bounded memory whatever the number of keys a stranger makes up
    (peer ids are free); what forgetting gives back is bounded by what it costs to come back
    (a new key needs a new connection, which the per-source admission below rate-limits)."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        self.rule = TokenBucket(rate, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> bool:
        """One token of ``key``'s budget, if it has one."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = Bucket(self.rule.burst, now)
        self._buckets[key] = bucket  # most recently used last
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return self.rule.take(bucket, now)


def source_of(ip: str) -> str:
    """The key a connection is counted under: the IPv4 address, or the IPv6 /64."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/{IPV6_PREFIX}", strict=False))
    return str(addr)


class InboundLimiter:
    """The admission rules above; ``admit`` / ``release`` bracket one live connection."""

    def __init__(
        self,
        refusals: Refusals,
        *,
        rate_per_ip: float,
        burst_per_ip: float,
        rate_total: float,
        burst_total: float,
        max_per_ip: int,
    ) -> None:
        self._refusals = refusals
        self._per_ip = BucketTable(rate_per_ip, burst_per_ip, MAX_SOURCES)
        self._total = TokenBucket(rate_total, burst_total)
        self._total_bucket = Bucket(burst_total, 0.0)
        self._live: dict[str, int] = {}
        self._max_per_ip = max_per_ip

    def admit(self, ip: str, now: float) -> str | None:
        """The source key if a new connection from ``ip`` may proceed, else None (counted)."""
        src = source_of(ip)
        if self._live.get(src, 0) >= self._max_per_ip:
            self._refusals.count("conn_per_ip")
            return None
        if not self._per_ip.take(src, now):
            self._refusals.count("conn_rate_ip")
            return None
        if not self._total.take(self._total_bucket, now):
            self._refusals.count("conn_rate_total")
            return None
        self._live[src] = self._live.get(src, 0) + 1
        return src

    def release(self, src: str) -> None:
        n = self._live.get(src, 0) - 1
        if n > 0:
            self._live[src] = n
        else:
            self._live.pop(src, None)


Handler = Callable[[Any, Any, Any], Awaitable[None]]


def limit_inbound(swarm: Any, limiter: InboundLimiter, clock: Callable[[], float]) -> None:
    """Put ``limiter`` in front of the swarm's inbound handler (py-libp2p 0.8.1: every
    accepted transport connection goes through ``_do_handle_inbound_connection`` before
    security or muxing), and end that handler when its connection closes.

    The second part fixes a leak in py-libp2p 0.8.1: after a successful upgrade the handler
    waits for the whole swarm to stop, holding one of the swarm's ``max_connections -
    min_connections`` (250) inbound slots even after its connection closed, so after 250
    inbound connections in a node's life every new one was refused, an honest peer's too
    (measured: 250 fresh-key connections made one after another, then an honest dial
    failed). Here the handler is cancelled once its socket is closed, which frees the slot
    and this source's live count."""
    inner: Handler = swarm._do_handle_inbound_connection

    async def guarded(read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        try:
            remote = read_write_closer.get_remote_address()
        except Exception:
            remote = None
        src = limiter.admit(str(remote[0]), clock()) if remote else None
        if remote and src is None:
            try:
                await read_write_closer.close()
            except Exception as exc:  # already gone: nothing left to close
                log.debug("closing a refused connection: %s", exc)
            return
        try:
            async with trio.open_nursery() as nursery:

                async def handle() -> None:
                    await inner(read_write_closer, maddr, failure_event)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(handle)
                await _closed(read_write_closer)
                nursery.cancel_scope.cancel()
        finally:
            if src is not None:
                limiter.release(src)

    setattr(swarm, "_do_handle_inbound_connection", guarded)  # noqa: B010 (on purpose)


async def _closed(read_write_closer: Any) -> None:
    """Returns once the connection's socket is closed (py-libp2p closes it when the
    connection ends, whoever ends it); never for a transport without one."""
    sock = getattr(getattr(read_write_closer, "stream", None), "socket", None)
    if sock is None:
        await trio.sleep_forever()
    while sock.fileno() != -1:
        await trio.sleep(CLOSED_POLL_S)  # a poll period, not a sync point
