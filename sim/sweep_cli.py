"""``swarm-tune sim sweep | baseline | regress``: the commands of issue 5 on the ``sim`` app.

Plain functions, mounted by ``sim/cli.py``'s lazy table: ``sim run`` does not pay for their
imports (pandas, the analysis package), and the runners stay free of terminal code.

Exit codes: 0 success, 1 regression failed, 2 bad input (scenario, sweep block, backend).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# Only light modules at the top: a bad scenario or option is refused before the simulator,
# pandas or the analysis package load (each command imports its runner after the checks).
from swarm_tune.runtime.progress import progress_bar
from swarm_tune.sim.baseline_regress import DEFAULT_OUT, Tolerances, format_figures, run_regression
from swarm_tune.sim.scenario import Scenario, ScenarioError, load_scenario

_DEFAULT = Tolerances()


def _load(console: Console, path: Path) -> Scenario:
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        for p in exc.problems:
            console.print(
                f"[red]error[/red] {p.render(exc.source)}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(2) from None


def sweep(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML with a sweep: block")],
    workers: Annotated[int, typer.Option(help="parallel points")] = max(1, os.cpu_count() or 1),
    backend: Annotated[str, typer.Option(help="local (process pool) or ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="existing Ray cluster (default: start one locally)")
    ] = None,
    ray_wheel: Annotated[
        Path | None,
        typer.Option(help="built wheel to ship to Ray workers (default: this code)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="sweep folder")] = None,
) -> None:
    """Run every point of SCENARIO's sweep (resumable) and write sweep.parquet + a report."""
    console = Console()
    if backend not in ("local", "ray"):
        console.print(f"[red]error[/red] --backend must be local or ray, not {backend!r}")
        raise typer.Exit(2)
    if ray_wheel is not None and backend != "ray":
        console.print("[red]error[/red] --ray-wheel needs --backend ray")
        raise typer.Exit(2)
    _load(console, scenario)
    from swarm_tune.sim.sweep import SweepError
    from swarm_tune.sim.sweep_run import Backend, SweepBackendError, run_sweep

    chosen: Backend = "ray" if backend == "ray" else "local"
    with progress_bar("sweep", "points", console) as update:
        count = {"done": 0, "total": 0}

        def on_start(total: int, done: int) -> None:
            count.update(done=done, total=total)
            update(done, total, f"{done} already done")

        def on_done(summary: dict[str, Any]) -> None:
            count["done"] += 1
            note = f"{summary['point']}: loss {summary['final_loss']:.3f}"
            update(count["done"], count["total"], note)

        try:
            result = run_sweep(
                scenario,
                out,
                backend=chosen,
                workers=workers,
                ray_address=ray_address,
                ray_wheel=ray_wheel,
                on_start=on_start,
                on_done=on_done,
            )
        except (SweepError, SweepBackendError) as exc:
            console.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    console.print(
        f"{result.total} points: {result.ran} ran, {result.skipped} skipped (already done) "
        f"in {result.wall_s:.1f}s on {result.backend_info}",
        highlight=False,
    )
    console.print(f"table:  {result.out_dir / 'sweep.parquet'}", highlight=False)
    console.print(f"report: {result.out_dir / 'report.html'}", highlight=False)


def baseline(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    rounds: Annotated[int | None, typer.Option(help="rounds (default: rounds.target)")] = None,
    out: Annotated[Path | None, typer.Option(help="output run folder")] = None,
) -> None:
    """Train the centralized baseline of SCENARIO; write it as a run folder."""
    console = Console()
    loaded = _load(console, scenario)
    from swarm_tune.sim.baseline import run_baseline
    from swarm_tune.sim.runner import with_seed

    sc = with_seed(loaded, seed)
    if sc.learning.mode != "surrogate":
        console.print("[red]error[/red] the centralized baseline supports learning.mode surrogate")
        raise typer.Exit(2)
    target = out or Path("runs_out") / f"{sc.name}-baseline-s{sc.seed}"
    with progress_bar(f"{sc.name} baseline", "rounds") as update:
        manifest = run_baseline(sc, target, rounds, lambda done, n: update(done, n, ""))
    console.print(
        f"{manifest['run_id']}: {manifest['swarm_round']} rounds in {manifest['wall_s']}s"
    )
    console.print(str(target), highlight=False)


def regress(
    scenario: Annotated[Path, typer.Argument(help="regression scenario YAML")],
    out: Annotated[Path, typer.Option(help="where the runs and the report go")] = DEFAULT_OUT,
    max_tokens_ratio: Annotated[float, typer.Option()] = _DEFAULT.max_tokens_ratio,
    max_final_ratio: Annotated[float, typer.Option()] = _DEFAULT.max_final_ratio,
    target_fraction: Annotated[float, typer.Option()] = _DEFAULT.target_fraction,
) -> None:
    """Run SCENARIO and its centralized baseline; fail if convergence regressed."""
    console = Console()
    sc = _load(console, scenario)
    tol = Tolerances(target_fraction, max_tokens_ratio, max_final_ratio)
    with progress_bar(f"regress {sc.name}", "rounds") as update:
        result = run_regression(sc, out, tol, update)
    console.print(format_figures(result.comparison, tol), highlight=False)
    if result.passed:
        console.print("[green]PASS[/green]")
    else:
        for f in result.failures:
            console.print(f"[red]FAIL[/red] {f}", highlight=False)
    console.print(f"report: {result.report}", highlight=False)
    if not result.passed:
        raise typer.Exit(1)
