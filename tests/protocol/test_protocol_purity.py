"""The core must stay sans-I/O: importing it may not pull in an event loop or network stack."""

import subprocess
import sys

FORBIDDEN = ("simpy", "trio", "libp2p", "asyncio", "socket", "time")


def test_protocol_core_imports_no_event_loop_or_network() -> None:
    code = (
        "import sys\n"
        "import torch  # torch itself pulls in asyncio; what matters is what *we* add\n"
        "before = set(sys.modules)\n"
        "import swarm_tune.runtime.protocol, swarm_tune.runtime.aggregation.weighted\n"
        "import swarm_tune.runtime.aggregation.strategy\n"
        "new = set(sys.modules) - before\n"
        f"bad = sorted(m for m in new if m.split('.')[0] in {FORBIDDEN[:4]!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"protocol core imported {out.stdout.strip()}"


def test_protocol_sources_never_read_a_clock() -> None:
    from pathlib import Path

    import swarm_tune.runtime.aggregation as agg
    import swarm_tune.runtime.protocol as proto

    offenders = []
    for pkg in (proto, agg):
        for path in Path(pkg.__path__[0]).glob("*.py"):
            text = path.read_text()
            for needle in (
                "import time",
                "from time",
                "datetime.now",
                "import asyncio",
                "import trio",
            ):
                if needle in text:
                    offenders.append(f"{path.name}: {needle}")
    assert offenders == []
