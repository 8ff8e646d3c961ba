"""The one progress bar (runtime/progress.py): drawn on a terminal, silent on a pipe, and shown
by a real long command on a real terminal while stdout keeps only the result."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

from procs import REPO, patience
from rich.console import Console

from swarm_tune.runtime.progress import progress_bar

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _plain(text: str) -> str:
    """What a person reads: the terminal's colour and cursor codes taken out."""
    return ANSI.sub("", text)


def test_bar_draws_done_total_unit_and_note_on_a_terminal() -> None:
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=120)
    with progress_bar("baseline", "rounds", console) as update:
        update(3, 10, "virtual 42s")
    text = _plain(sink.getvalue())
    assert "baseline" in text and "3/10 rounds" in text and "virtual 42s" in text, text
    assert "ETA" in text, text


def test_bar_writes_nothing_on_a_pipe() -> None:
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=False)
    with progress_bar("baseline", "rounds", console) as update:
        update(3, 10, "note")
    assert sink.getvalue() == ""


def _read_all(fd: int, into: list[bytes]) -> None:
    """Drain a pty until its other end is closed (the child blocks if nobody reads)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child's end is closed and everything was read
            return
        if not chunk:
            return
        into.append(chunk)


def test_sim_baseline_shows_a_bar_on_the_terminal_and_keeps_stdout_clean(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    out = tmp_path / "base"
    drawn: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(primary, drawn), daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarm_tune.runtime.cli", "sim", "baseline"]
            + [str(REPO / "scenarios" / "quickstart.yaml"), "--rounds", "5", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=secondary,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(secondary)  # the child holds its own copy; EOF comes when it exits
        stdout, _ = proc.communicate(timeout=patience(120))
        reader.join(timeout=patience(10))
    finally:
        proc.kill()
        os.close(primary)
    screen = _plain(b"".join(drawn).decode(errors="replace"))
    assert proc.returncode == 0, screen
    assert "quickstart baseline" in screen and "5/5 rounds" in screen and "ETA" in screen, screen
    text = stdout.decode()
    assert "\x1b" not in text and text.strip().endswith(str(out)), text
