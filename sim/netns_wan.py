"""A throwaway WAN in Linux network namespaces: N hosts, one hub, a bridge, shaped links.

Layout (every name carries a random suffix, every address is in 10.231.X.0/24 and exists only
inside these namespaces)::

    ns <p>-n0  eth0 10.231.X.1  --veth--+
    ns <p>-n1  eth0 10.231.X.2  --veth--+-- bridge in ns <p>-hub, addresses 10.231.X.101..
    ns <p>-n2  eth0 10.231.X.3  --veth--+   (stand-ins: 10.231.X.(101+i) "is" host i)

* Bandwidth: ``tc tbf`` on both ends of every veth (host egress and host ingress).
* Loss: nftables in each host namespace drops ``loss_pct`` % of outgoing packets
  (``numgen random mod 100 < N``), counted.
* Latency: the hub redirects every TCP port of the stand-in addresses to one
  ``latency_relay`` listener that delays each direction and connects onwards *from the
  caller's stand-in*. Hosts are told only stand-in addresses, and nftables in each host drops
  anything addressed to a real host address, so every connection (libp2p and the bulk data
  plane's direct TCP alike) crosses the delay line; nothing takes a shortcut.

Teardown deletes the namespaces (which removes veths, bridge, qdiscs and rulesets with them);
it runs even when setup failed half way.

Why in the package: ``swarm-tune sim calibrate`` runs a scenario's real twin on it (N node
processes with the scenario's links); the chaos tests (tests/chaos) build it too.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from dataclasses import dataclass, field


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class Wan:
    hosts: int = 3
    rate: str = "40mbit"
    loss_pct: int = 1
    relay_port: int = 9999
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    octet: int = field(default_factory=lambda: 1 + secrets.randbelow(254))
    created: list[str] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return f"swc{self.suffix}-hub"

    def ns(self, i: int) -> str:
        return f"swc{self.suffix}-n{i}"

    def real_ip(self, i: int) -> str:
        return f"10.231.{self.octet}.{1 + i}"

    def standin_ip(self, i: int) -> str:
        return f"10.231.{self.octet}.{101 + i}"

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def relay_argv(self, python: str, delay_ms: float) -> list[str]:
        """The userspace delay relay (runtime/net/latency_relay.py) in the hub, for every host:
        netem is missing on these machines, so one crossing per direction adds ``delay_ms``."""
        return [
            *self.exec_prefix(self.hub),
            python, "-m", "swarm_tune.runtime.net.latency_relay",
            "--port", str(self.relay_port), "--delay-ms", str(float(delay_ms)),
            *(f"--map={self.real_ip(i)}={self.standin_ip(i)}" for i in range(self.hosts)),
        ]  # fmt: skip

    def nx(self, ns: str, *argv: str, stdin: str | None = None) -> str:
        return sh(*self.exec_prefix(ns), *argv, stdin=stdin)

    # ----------------------------------------------------------------------- lifecycle

    def up(self) -> None:
        bridge = f"swcbr{self.suffix}"
        for name in [self.hub, *(self.ns(i) for i in range(self.hosts))]:
            sh("ip", "netns", "add", name)
            self.created.append(name)
            self.nx(name, "ip", "link", "set", "lo", "up")
        self.nx(self.hub, "ip", "link", "add", bridge, "type", "bridge")
        self.nx(self.hub, "ip", "link", "set", bridge, "up")
        for i in range(self.hosts):
            self.nx(self.hub, "ip", "addr", "add", f"{self.standin_ip(i)}/24", "dev", bridge)
        for i in range(self.hosts):
            hub_end = f"swc{self.suffix}h{i}"
            sh(
                "ip", "-n", self.hub, "link", "add", hub_end, "type", "veth",
                "peer", "name", "eth0", "netns", self.ns(i),
            )  # fmt: skip
            self.nx(self.hub, "ip", "link", "set", hub_end, "master", bridge, "up")
            self.nx(self.ns(i), "ip", "addr", "add", f"{self.real_ip(i)}/24", "dev", "eth0")
            self.nx(self.ns(i), "ip", "link", "set", "eth0", "up")
            for ns, dev in ((self.ns(i), "eth0"), (self.hub, hub_end)):
                self.nx(
                    ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                    "rate", self.rate, "burst", "64kb", "latency", "200ms",
                )  # fmt: skip
            self.nx(self.ns(i), "nft", "-f", "-", stdin=self._host_rules())
        self.nx(self.hub, "nft", "-f", "-", stdin=self._hub_rules())

    def down(self) -> None:
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()

    def leftovers(self) -> list[str]:
        names = sh("ip", "netns", "list", check=False)
        return [line.split()[0] for line in names.splitlines() if self.suffix in line]

    # ----------------------------------------------------------------------- rules

    def _standins(self) -> str:
        return ", ".join(self.standin_ip(i) for i in range(self.hosts))

    def _host_rules(self) -> str:
        return f"""
table inet swc_wan {{
    chain out {{
        type filter hook output priority 0; policy accept;
        oifname "eth0" ip daddr != {{ {self._standins()} }} counter drop comment "shortcut"
        oifname "eth0" numgen random mod 100 < {self.loss_pct} counter drop comment "loss"
    }}
}}
"""

    def _hub_rules(self) -> str:
        return f"""
table ip swc_nat {{
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {{ {self._standins()} }} meta l4proto tcp counter redirect to :{self.relay_port}
    }}
}}
"""

    def counter(self, i: int, comment: str) -> tuple[int, int]:
        """(packets, bytes) of host ``i``'s rule with this comment."""
        text = self.nx(self.ns(i), "nft", "list", "table", "inet", "swc_wan")
        for line in text.splitlines():
            if f'comment "{comment}"' in line:
                m = re.search(r"counter packets (\d+) bytes (\d+)", line)
                if m:
                    return int(m.group(1)), int(m.group(2))
        raise AssertionError(f"no counter {comment!r} in:\n{text}")

    def redirected(self) -> int:
        text = self.nx(self.hub, "nft", "list", "table", "ip", "swc_nat")
        m = re.search(r"counter packets (\d+)", text)
        return int(m.group(1)) if m else 0
