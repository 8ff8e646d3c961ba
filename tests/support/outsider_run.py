"""Driving tests/support/outsider.py from a test or benchmark, and reading what the node counted.

Why apart from outsider.py: the attacker must import nothing from this repository; the
harness around it (a child process with a start mark, its report, the victim's refusal
counters in /metrics) is shared by the default-suite outsider test, the slow hostile suite
and the per-attack benchmark, which had three copies of the metrics reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUTSIDER = Path(__file__).resolve().with_name("outsider.py")
PREFIX = "OUTSIDER"

#: The hostile suite's attacks (outsider.py's ``name[:count]@source``), each from its own
#: loopback address: separate attackers, each inside its own per-IP budgets. Shared by the
#: slow CI test (all at once) and benchmarks/bench_outsider.py (one at a time).
SUITE = {
    "streams": "streams@127.0.0.2",
    "idle": "idle:200@127.0.0.3",
    "offers": "offers:24@127.0.0.4",
    "dribble": "dribble:12@127.0.0.5",
    "badtoken": "badtoken:50@127.0.0.6",
}


def refused(metrics_port: int) -> dict[str, float]:
    """``swarm_tune_net_refused_total`` by reason, from the node's /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("swarm_tune_net_refused_total{"):
            label, value = line.rsplit(" ", 1)
            out[label.split('reason="', 1)[1].rstrip('"}')] = float(value)
    return out


def outsider_argv(target: str, *args: str, prefix: Sequence[str] = ()) -> list[str]:
    """The outsider's command line against ``target`` (data port learnt from the node)."""
    return [*prefix, sys.executable, str(OUTSIDER), target, "0", *args]


def parse_report(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(f"{PREFIX} ")]
    assert lines, f"the outsider printed no report:\n{stdout[-2000:]}"
    report: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1])
    return report


def run_outsider(target: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    """Run the outsider to its end; its report (``seen`` per attack)."""
    out = subprocess.run(
        outsider_argv(target, *args), capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return parse_report(out.stdout)


class Outsider:
    """The outsider as a child process whose attack phase a caller can time: ``started()``
    returns once set-up (imports, data port, protocol list) is over, ``finish()`` once it
    exited. stderr goes to a file (a full pipe would block it)."""

    def __init__(self, argv: list[str], err_path: Path) -> None:
        self.err_path = err_path
        with err_path.open("w") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)

    def started(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(f"{PREFIX}_START"):
                return
        raise AssertionError(f"outsider ended before its attack:\n{self.stderr()}")

    def finish(self, timeout: float) -> dict[str, Any]:
        stdout, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, self.stderr()
        return parse_report(stdout)

    def stderr(self) -> str:
        return self.err_path.read_text()[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
