"""Puts tests/support on sys.path, once, before any test module is imported; keeps the
token cache (runtime/training/data.py) out of the user's home folder.

Why here: pytest runs in rootdir mode without packages (each test folder is put on sys.path
by itself), so helpers shared between folders need one place that makes them importable
by a plain ``import procs``; a sys.path line in every test module would be copy-paste.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

_SUPPORT = str(Path(__file__).resolve().parent / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)

# Child processes (nodes, CLIs) inherit it; one folder per test session, removed at exit.
if "SWARM_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="swarm-tune-cache-")
    os.environ["SWARM_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# A SIGTERM (CI's time limit, `kill`) unwinds like Ctrl-C, so every test's ``finally`` runs:
# node processes are killed and network namespaces deleted instead of outliving pytest.
signal.signal(signal.SIGTERM, _interrupt)
