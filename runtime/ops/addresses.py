"""Syntactic checks for the peer addresses a user types into config and manifests.

Why a hand-written check instead of the ``multiaddr`` package: config validation must work
in every install (the ops layer does not pull the ``net`` extra) and must say *which part*
of an address is wrong in words a user understands. We only accept the shapes a node can
actually dial as a bootstrap peer: a host part, a TCP port and the peer id, optionally
through a circuit relay. Anything else (bare ``/ip4/x/tcp/n`` without ``/p2p/``) is refused
early because a bootstrap address without a peer id cannot be authenticated.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["BASE58_ALPHABET", "is_peer_id", "validate_multiaddr"]

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_PEER_ID = re.compile(rf"^[{BASE58_ALPHABET}]{{40,64}}$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

_EXAMPLE = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."


def is_peer_id(text: str) -> bool:
    """True when ``text`` looks like a base58 libp2p peer id (``12D3KooW...`` or ``Qm...``)."""
    return bool(_PEER_ID.match(text))


def _check_host(proto: str, host: str) -> None:
    if proto == "ip4":
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    elif proto == "ip6":
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif not _DNS_NAME.match(host):
        raise ValueError(f"{host!r} is not a valid DNS name")


def validate_multiaddr(text: str) -> str:
    """Return ``text`` stripped if it is a dialable peer multiaddr, else raise ValueError.

    Accepted: ``/{ip4|ip6|dns|dns4|dns6}/HOST/tcp/PORT/p2p/PEER_ID`` optionally followed by
    ``/p2p-circuit/p2p/PEER_ID`` (a peer reached through that relay).
    """
    addr = text.strip()
    where = f"(got {addr!r}; expected e.g. {_EXAMPLE})"
    if not addr.startswith("/"):
        raise ValueError(f"a multiaddr starts with '/' {where}")
    parts = addr.split("/")[1:]
    if len(parts) < 6:
        raise ValueError(f"incomplete multiaddr, need host, tcp port and /p2p/<peer id> {where}")
    proto, host, tcp, port, p2p, peer = parts[:6]
    if proto not in ("ip4", "ip6", "dns", "dns4", "dns6"):
        raise ValueError(f"address must start with /ip4, /ip6, /dns4 or /dns6 {where}")
    _check_host(proto, host)
    if tcp != "tcp":
        raise ValueError(f"expected /tcp/<port> after the host {where}")
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"tcp port must be between 1 and 65535 {where}")
    if p2p != "p2p" or not is_peer_id(peer):
        raise ValueError(f"expected /p2p/<base58 peer id> after the port {where}")
    rest = parts[6:]
    if rest and not (
        len(rest) == 3 and rest[0] == "p2p-circuit" and rest[1] == "p2p" and is_peer_id(rest[2])
    ):
        raise ValueError(f"only /p2p-circuit/p2p/<peer id> may follow the peer id {where}")
    return addr
