"""Which of its addresses a node tells peers: identify, identify-push, its signed peer record,
its DHT provider records, the addresses a relay names in its reservation answers and the ones
DCUtR sends the peer it hole-punches with all follow :func:`advertised`, never the raw
interface list.

Why: all four go to strangers. A peer that connects learns our addresses from identify and
passes them on (Kademlia ``closerPeers`` answers hand them to anyone who asks), a provider
record travels across the DHT. A private, loopback, link-local or shared (CGNAT) address is
useless to a peer outside the node's own network (it cannot dial it) and is a map of that
network. So:

* a node behind a NAT (it keeps relay slots: ``relayed`` is not None) names its relayed
  addresses, then the ones of its own that are globally routable;
* any other node names its own addresses, the non-global ones only on a LAN or loopback run:
  ``advertise_private`` True, or None (the default, auto) and the node has no globally
  routable address at all (a loopback test swarm, a LAN-only run: there, filtering would leave
  nothing to dial). A public node with private interfaces too (a VPS with a docker bridge)
  names only its public ones.

How: py-libp2p 0.8.1's ``host.get_addrs()`` cannot carry a circuit address (it strips the first
``/p2p/`` component of every address and appends the host's own id, which turns
``<relay>/p2p/R/p2p-circuit`` into the relay's address with our id), and identify falls back to
the raw transport addresses when ``get_addrs()`` is empty. So the identify handler, the
identify-push sender, the DHT's provider store and the relay service (its reservation answer
names the relay's ``get_addrs()``) are each given a :class:`AdvertisedView` of the host, whose
``get_addrs`` and ``get_transport_addrs`` are :func:`advertised`; everything else is the
host's. DCUtR cannot take the view: it binds its hole-punch dials to our real listen port, read
from ``get_addrs()``. Its CONNECT message (our listen addresses, or the NAT's outside address a
relay observed with our listen port) is filtered instead (:func:`tell_through_dcutr`). The
node's own ``multiaddrs`` (what an operator reads and hands out) stay the full list.

The netns NAT tests run on 10.x: a network of private addresses standing in for the internet.
Where a node there keeps relay slots (``relayed`` is not None), the rule drops every address
DCUtR could name, so that test opts in with ``SWARM_ADVERTISE_PRIVATE=true``, as an operator
of such a private WAN would.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import multiaddr


def advertised(
    own: list[multiaddr.Multiaddr], relayed: list[str] | None, private: bool | None
) -> list[multiaddr.Multiaddr]:
    """The addresses peers are told (rules in the module docstring); ``private`` is the
    ``advertise_private`` setting (None: auto)."""
    told = [multiaddr.Multiaddr(a) for a in relayed] if relayed is not None else []
    return told + tellable(own, own, relayed, private)


def tellable(
    addrs: list[multiaddr.Multiaddr],
    own: list[multiaddr.Multiaddr],
    relayed: list[str] | None,
    private: bool | None,
) -> list[multiaddr.Multiaddr]:
    """Of ``addrs`` (our own addresses ``own``, or ones made from them, as DCUtR's predicted
    ones), those peers may be told: the globally routable ones, all of them on a LAN or
    loopback run (the module docstring's rule)."""
    lan = relayed is None and not any(is_global(a) for a in own)
    if private or (private is None and lan):
        return list(addrs)
    return [a for a in addrs if is_global(a)]


def is_global(addr: multiaddr.Multiaddr) -> bool:
    """True when ``addr``'s IP is globally routable (False for dns, circuit, ... addresses)."""
    for proto in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(addr.value_for_protocol(proto)).is_global
        except Exception:  # not this protocol (or not an IP at all: dns, circuit, ...)
            continue
    return False


class AdvertisedView:
    """The host as the code that tells peers our addresses sees it: everything delegated, but
    ``get_addrs`` and ``get_transport_addrs`` are :func:`advertised`."""

    def __init__(
        self, host: Any, relayed: Callable[[], list[str] | None], private: bool | None
    ) -> None:
        self._host = host
        self._relayed = relayed
        self._private = private

    def get_addrs(self) -> list[multiaddr.Multiaddr]:
        return advertised(self._host.get_addrs(), self._relayed(), self._private)

    def get_transport_addrs(self) -> list[multiaddr.Multiaddr]:
        # identify's fallback when get_addrs() is empty: the same rule, never the raw list
        return advertised(self._host.get_transport_addrs(), self._relayed(), self._private)

    def tellable(self, addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        """Of ``addrs``, those peers may be told (:func:`tellable`)."""
        return tellable(addrs, self._host.get_addrs(), self._relayed(), self._private)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)


def tell_through_dcutr(dcutr: Any, view: AdvertisedView) -> None:
    """DCUtR's CONNECT messages (both roles build them in ``_get_observed_addrs``) name only
    the addresses ``view`` may tell (py-libp2p 0.8.1 sends ``get_addrs()``, private ones
    included, or predictions made from them)."""
    inner = dcutr._get_observed_addrs

    async def told() -> list[bytes]:
        addrs = [multiaddr.Multiaddr(b) for b in await inner()]
        return [a.to_bytes() for a in view.tellable(addrs)]

    setattr(dcutr, "_get_observed_addrs", told)  # noqa: B010 (on purpose)
