"""How long the user waits for ``swarm-tune --help`` and for a refusal of bad input.

Goal (issue 18): under 1 s each on an idle box. Measured through the user's own command (the
installed ``swarm-tune`` console script, a fresh process per call), median of ``--repeat``
runs, beside a baseline measured in the same run: a bare ``python -c pass`` start, which no
CLI can beat. The ratio to that baseline is what to compare across machines; the absolute
figures are what a person feels. No shortcut: each figure is a full process start.

    python benchmarks/bench_cli.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 1.0
BIN = Path(sys.executable).parent / "swarm-tune"


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the child (what a shared, busy box cannot inflate), code."""
    cpu0, start = _child_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start, _child_cpu() - cpu0, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        (tmp / "bad.yaml").write_text("not_a_key: 1\n")
        cases = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "swarm-tune --help": [str(BIN), "--help"],
            "swarm-tune sim --help": [str(BIN), "sim", "--help"],
            "sim run <bad scenario>": [str(BIN), "sim", "run", str(tmp / "bad.yaml")],
            "sim sweep <bad scenario>": [str(BIN), "sim", "sweep", str(tmp / "bad.yaml")],
            "report <missing folder>": [str(BIN), "report", str(tmp / "nope")],
            "benchmark <outside path>": [str(BIN), "benchmark", "/nonexistent"],
            "join <unknown run>": [str(BIN), "join", "--run-id", "nope", "--node-index", "0"],
            "node <missing env file>": [str(BIN), "node", "--env-file", str(tmp / "x.env")],
        }
        results: dict[str, tuple[float, float]] = {}
        for name, argv in cases.items():
            timed(argv, tmp)  # warm the page cache
            walls, cpus = [], []
            for _ in range(args.repeat):
                wall, cpu, code = timed(argv, tmp)
                expected = 0 if "help" in name or "baseline" in name else 2
                if code != expected:
                    raise SystemExit(f"{name}: exit {code}, expected {expected}")
                walls.append(wall)
                cpus.append(cpu)
            results[name] = (statistics.median(walls), statistics.median(cpus))
    base, base_cpu = results.pop("python -c pass (baseline)")
    print(
        f"baseline: python -c pass {base * 1000:.0f} ms wall, {base_cpu * 1000:.0f} ms CPU "
        f"(medians of {args.repeat}); wall well above CPU means the box is busy"
    )
    print(f"{'command':32} {'wall':>8} {'CPU':>8} {'wall x base':>12}  goal wall <= {GOAL_S} s")
    worst = 0.0
    for name, (wall, cpu) in results.items():
        worst = max(worst, wall)
        verdict = "met" if wall <= GOAL_S else "NOT met"
        print(
            f"{name:32} {wall * 1000:5.0f} ms {cpu * 1000:5.0f} ms {wall / base:11.1f}x  {verdict}"
        )
    print(f"slowest {worst * 1000:.0f} ms wall: goal {'met' if worst <= GOAL_S else 'NOT met'}")


if __name__ == "__main__":
    main()
