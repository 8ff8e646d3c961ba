"""How much CPU the machine left for the real twin's nodes (sim-to-real calibration, issue 15).

Why: the twin runs N node processes on one machine, shared with whatever else runs there. A
round whose bytes cost the nodes' event loops CPU (Noise, yamux, the codec) takes as long as
that CPU takes when the nodes get only part of a core each, and on a shared machine that
part is not ``cores / N``. The sim is told the share (compute class ``cores``), measured
here, never assumed: the machine's busy CPU time (``/proc/stat``) minus the nodes' own
(``/proc/PID/stat``) is what the rest of the machine took, the relay included (it is the
emulated network, not a node); what is left of the cores is what the nodes could have had.
Measuring the nodes' own use instead would be circular: it follows the round time it is
meant to predict.

A sampler thread reads both every ``period`` seconds while the twin runs; ``available``
reduces the samples inside a time window (the rounds, from the nodes' logs).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["CpuSample", "HostCpuSampler", "available_cores", "machine_cores"]

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    t: float  # epoch seconds (the nodes' log timestamps are on the same clock)
    busy_s: float  # the machine's busy CPU seconds since boot (every core)
    nodes_s: float  # the nodes' CPU seconds (user + system, every thread)


def machine_cores() -> int:
    return len(os.sched_getaffinity(0))


def _busy_s() -> float:
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    # guest time is already counted in user/nice: leave it out of the sum
    return (sum(ticks[:8]) - idle) / _TICK


def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # exited: its last sample stands (see ``HostCpuSampler.sample``)
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


class HostCpuSampler:
    """Samples the machine and the given processes until ``stop``; samples are in ``samples``."""

    def __init__(self, pids: Callable[[], Sequence[int]], period: float = 0.25) -> None:
        self._pids = pids
        self._period = period
        self._stop = threading.Event()
        self._last: dict[int, float] = {}  # per process: a process that exited keeps its CPU
        self.samples: list[CpuSample] = []
        self._thread = threading.Thread(target=self._run, name="host-cpu", daemon=True)

    def sample(self) -> None:
        for pid in self._pids():
            cpu = _proc_cpu_s(pid)
            if cpu:
                self._last[pid] = cpu
        self.samples.append(CpuSample(time.time(), _busy_s(), sum(self._last.values())))

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # never started when the WAN could not be built
            self._stop.set()
            self._thread.join(timeout=5)
            self.sample()


def available_cores(samples: Sequence[CpuSample], start: float, end: float, cores: int) -> float:
    """Cores the rest of the machine left to the nodes between ``start`` and ``end``: ``cores``
    minus the others' mean use over the samples spanning the window (ValueError if none do)."""
    inside = [s for s in samples if start <= s.t <= end]
    if len(inside) < 2 or inside[-1].t <= inside[0].t:
        raise ValueError("no CPU samples span the rounds")
    a, b = inside[0], inside[-1]
    others = ((b.busy_s - a.busy_s) - (b.nodes_s - a.nodes_s)) / (b.t - a.t)
    return max(0.05 * cores, cores - max(0.0, others))
