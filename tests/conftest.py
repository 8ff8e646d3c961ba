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
from collections.abc import Generator
from pathlib import Path
from types import FrameType

import pytest

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """A failed test that started real processes (nodes, CLIs) carries their log tails in
    its report: they are killed on the way out, and their logs with them (two "nodes meet
    late" failures in CI could not be explained). SWARM_TEST_LOG_DIR keeps whole logs."""
    outcome = yield
    import procs  # tests/support, on sys.path above

    report = outcome.get_result()
    if call.when == "call" and report.failed:
        text = procs.log_report(procs.spawned(), failed=True, keep_dir=None)
    elif call.when == "teardown":
        keep = os.environ.get("SWARM_TEST_LOG_DIR")
        text = procs.log_report(procs.take_spawned(), report.failed, keep)
    else:
        return
    if text:
        report.sections.append(("process logs", text))
