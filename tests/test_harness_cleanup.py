"""A pytest that is sent SIGTERM (CI's time limit, a developer's ``kill``) still runs the
tests' ``finally`` blocks: the child processes a test started do not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from procs import REPO, patience, wait_until

INNER = """
import time
from procs import Proc

def test_holds_a_child(tmp_path):
    child = Proc("sleeper")
    child.spawn(["{python}", "-c", "import time; print('up', flush=True); time.sleep(600)"], {{}})
    try:
        while not child.lines():
            time.sleep(0.05)
        (tmp_path.parent.parent / "child.pid").write_text(str(child.pid))
        time.sleep(600)
    finally:
        child.kill()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent has not reaped it yet).
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_to_pytest_kills_the_children_a_test_started(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER.format(python=sys.executable))
    (tmp_path / "base").mkdir()
    pid_file = tmp_path / "base" / "child.pid"
    log = tmp_path / "inner.log"
    # The project's own conftest, loaded as a plugin: it is the thing under test.
    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    with log.open("w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest"]
            + ["--basetemp", str(tmp_path / "base" / "t"), str(tmp_path / "test_inner.py")],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": path},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: run.poll() is not None or (pid_file.exists() and pid_file.read_text() != ""),
            60,
            "the inner test's child",
            context=log.read_text,
        )
        assert run.poll() is None, log.read_text()
        child = int(pid_file.read_text())
        assert _alive(child)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=patience(30))
        wait_until(lambda: not _alive(child), 10, f"child {child} gone", context=log.read_text)
    finally:
        run.kill()


FAILING = """
import sys
from procs import Proc

def test_fails_after_its_child_logged(tmp_path):
    child = Proc("n9")
    code = "import sys\\n" + "\\n".join(
        ['print(\\'{{"event": "net.connected", "peer": "P"}}\\', file=sys.stderr)']
        + [f"print('line {{i}}', file=sys.stderr)" for i in range(100)]
    )
    child.spawn(["{python}", "-c", code], {{}})
    child.proc.wait()
    while len(child.err_lines()) < 101:  # the reader thread catches up
        pass
    assert False, "the nodes met late"
"""


def test_a_failed_test_reports_its_processes_logs(tmp_path: Path) -> None:
    """A failed test that started processes carries each one's membership lines and last
    lines in its report (the nodes are gone with their logs after it); SWARM_TEST_LOG_DIR
    keeps the whole logs. Cost: one inner pytest, ~2 s."""
    (tmp_path / "test_inner.py").write_text(FAILING.format(python=sys.executable))
    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    keep = tmp_path / "logs"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest"]
        + ["--basetemp", str(tmp_path / "t"), str(tmp_path / "test_inner.py")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path, "SWARM_TEST_LOG_DIR": str(keep)},
        capture_output=True,
        text=True,
        timeout=patience(120),
        check=False,
    )
    out = run.stdout
    assert run.returncode == 1 and "the nodes met late" in out, out
    assert "--- n9, membership" in out and '"event": "net.connected"' in out, out
    assert "line 99" in out and "line 59" not in out, out  # the last 40 lines
    (kept,) = keep.iterdir()
    assert kept.name.endswith("-n9.log") and "line 0\n" in kept.read_text()
