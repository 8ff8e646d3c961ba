"""What the chaos tests add to tests/support/procs.py: root tools, chaos seeds and settings.

Chaos nodes use key seeds from 0x41 up (peer ids of their own, distinct from the node tests'),
may listen on namespace addresses under ``ip netns exec`` (``NodeProc``'s ``host`` and
``prefix``), and run with slower protocol timeouts, since emulated WAN links and hostile
floods make rounds slower than on a quiet loopback.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from procs import NodeProc, require, swarm_env

CHAOS_SEED_OFFSET = 0x41
# Slower rounds and eviction than on loopback; no checkpoints (nothing here restarts a node).
CHAOS = {
    "SWARM_ROUND_TIMEOUT_S": "10",
    "SWARM_EVICTION_TIMEOUT_S": "8",
    "SWARM_CHECKPOINT_EVERY_ROUNDS": "0",
    "PYTHONUNBUFFERED": "1",
}


def require_root_tools(*tools: str) -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, tc, nftables)")
    missing = [t for t in tools if shutil.which(t) is None]
    require(not missing, f"missing tools: {', '.join(missing)}")


def chaos_node(
    index: int,
    host: str,
    port: int,
    workdir: Path,
    env: Mapping[str, str],
    prefix: Sequence[str] = (),
) -> NodeProc:
    """One ``swarm-tune node`` (key seed ``index`` from 0x41) listening on ``host``."""
    return NodeProc(
        index, port, workdir, env, host=host, seed_offset=CHAOS_SEED_OFFSET, prefix=prefix
    )


def chaos_env(**extra: str) -> dict[str, str]:
    return swarm_env("chaos", CHAOS, **extra)
