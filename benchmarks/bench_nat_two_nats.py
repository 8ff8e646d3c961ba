"""Two NATed peers behind two separate nftables masquerades, meeting through a public relay.

Why a benchmark and not a CI test: it builds five network namespaces and waits up to
``--upgrade-within`` seconds for DCUtR, which is more than the CI budget allows for a question
whose answer (does hole punching get through two Linux masquerades?) depends on the NATs,
not on our code. tests/chaos/test_chaos_nat.py covers one NAT in CI.

Topology (X random)::

    A 10.233.X.2 -- rtrA (masq) -- 10.232.X.0/24 -- pub (relay 10.232.X.1, forwards)
    B 10.235.X.2 -- rtrB (masq) -- 10.234.X.0/24 --/

A reserves a slot on the relay and publishes its relayed address; B dials it (the only way:
neither private network is routed from outside), optionally with DCUtR on both sides, then
sends a small message and a 3 MB bulk message and waits for A's digests. Printed per mode:
connect time, whether DCUtR added a direct connection and when, the send time, and the send
time with DCUtR against the relayed-only baseline measured in the same run.

Run as root: ``python benchmarks/bench_nat_two_nats.py [--upgrade-within 15]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = str(Path(__file__).resolve().parents[1] / "tests" / "chaos" / "nat_peer.py")
RELAY_PORT = 4101


def sh(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


class TwoNats:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.x = 1 + secrets.randbelow(254)
        self.created: list[str] = []

    def ns(self, role: str) -> str:
        return f"sw2{self.tag}{role}"

    def nx(self, role: str, *argv: str, stdin: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.ns(role), *argv, stdin=stdin)

    def link(self, a: str, b: str, net: str, a_host: int, b_host: int) -> str:
        """A veth pair between namespaces ``a`` and ``b`` on ``net``.0/24; returns b's end."""
        ea, eb = f"v{self.tag}{a}{b}", f"v{self.tag}{b}{a}"
        sh("ip", "link", "add", ea, "netns", self.ns(a), "type", "veth", "peer", "name", eb,
           "netns", self.ns(b))  # fmt: skip
        for role, end, host in ((a, ea, a_host), (b, eb, b_host)):
            self.nx(role, "ip", "addr", "add", f"{net}.{host}/24", "dev", end)
            self.nx(role, "ip", "link", "set", end, "up")
        return eb

    def up(self) -> None:
        for role in ("pub", "ra", "rb", "a", "b"):
            sh("ip", "netns", "add", self.ns(role))
            self.created.append(self.ns(role))
            self.nx(role, "ip", "link", "set", "lo", "up")
        x = self.x
        for r, wan, lan, node in (("ra", 232, 233, "a"), ("rb", 234, 235, "b")):
            out = self.link("pub", r, f"10.{wan}.{x}", 1, 2)
            self.link(node, r, f"10.{lan}.{x}", 2, 1)
            self.nx(node, "ip", "route", "add", "default", "via", f"10.{lan}.{x}.1")
            self.nx(r, "ip", "route", "add", "default", "via", f"10.{wan}.{x}.1")
            self.nx(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.nx(r, "nft", "-f", "-", stdin=(
                "table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n"
                f'  oifname "{out}" counter masquerade\n }}\n}}\n'
            ))  # fmt: skip
        self.nx("pub", "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def down(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def spawn(net: TwoNats, role: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", net.ns(role), sys.executable, PEER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )


def read_until(proc: subprocess.Popen[str], prefix: str, lines: list[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(prefix):
            return line.strip()
    raise RuntimeError(f"no {prefix} line; got {lines}")


def one_run(dcutr: bool, upgrade_within: float) -> dict[str, object]:
    net = TwoNats()
    procs: list[subprocess.Popen[str]] = []
    flag = "1" if dcutr else "0"
    try:
        net.up()
        work = Path(tempfile.mkdtemp())
        relay = spawn(net, "pub", "relay", f"/ip4/10.232.{net.x}.1/tcp/{RELAY_PORT}")
        procs.append(relay)
        relay_addr = read_until(relay, "RELAY", []).split()[1]
        a = spawn(net, "a", "natted", f"/ip4/10.233.{net.x}.2/tcp/0", relay_addr, str(work), flag)
        procs.append(a)
        t0 = time.monotonic()
        b = spawn(net, "b", "dialer", f"/ip4/10.235.{net.x}.2/tcp/0", str(work), flag,
                  str(upgrade_within))  # fmt: skip
        procs.append(b)
        out: list[str] = []
        read_until(b, "DONE", out)
        took = time.monotonic() - t0
        upgraded = [x for x in out if x.startswith("UPGRADED")]
        answers = [x for x in out if x.startswith("ANSWER")]
        return {
            "dcutr": dcutr,
            "answers_ok": len(answers) == 2 and all(x.endswith("True") for x in answers),
            "upgraded_after_s": float(upgraded[0].split()[1]) if upgraded else None,
            "send_s": float(next(x for x in out if x.startswith("SENT_S")).split()[1]),
            "kinds": next(x for x in out if x.startswith("KINDS")).split()[1:],
            "total_s": round(took, 2),
        }
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        net.down()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--upgrade-within", type=float, default=15.0)
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, nftables)")
    base = one_run(False, args.upgrade_within)
    punch = one_run(True, args.upgrade_within)
    for r in (base, punch):
        print(r)
    ratio = base["send_s"] / punch["send_s"]  # type: ignore[operator]
    print(
        f"two NATs: relayed circuit works: {base['answers_ok']}; DCUtR upgraded: "
        f"{punch['upgraded_after_s'] is not None} (after {punch['upgraded_after_s']} s, goal: "
        f"direct where the NATs allow); small+3 MB send {punch['send_s']:.2f} s with DCUtR vs "
        f"{base['send_s']:.2f} s relayed (ratio relayed/dcutr {ratio:.2f})"
    )


if __name__ == "__main__":
    main()
