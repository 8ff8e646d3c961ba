"""``swarm-tune report RUN_DIR... [--out DIR]``.

Why so thin: the report is a library function (sweeps and the CI regression call it too);
the command only turns paths into runs (with the progress bar every long command shows),
maps "not a run folder" to a one-line error and exit code 2, and prints where the report
went — the one thing a person needs next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Only the folder checks at the top: a bad path is refused before pandas and matplotlib load.
from swarm_tune.analysis.run_dirs import NotARunError, check_run_dir, find_runs


def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="run folders, or folders containing runs (a sweep)")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="report folder (default: the first run's)")
    ] = None,
    baseline: Annotated[
        list[Path] | None,
        typer.Option("--baseline", help="centralized-baseline run folder (reference line)"),
    ] = None,
    target_fraction: Annotated[
        float | None,
        typer.Option(
            help="target loss: this share of the baseline's improvement (default 0.75)",
            show_default=False,
        ),
    ] = None,
    title: Annotated[str, typer.Option(help="report title")] = "Swarm-Tune report",
) -> None:
    """Write a self-contained HTML report (plots + tables) for one or many runs."""
    try:
        folders = find_runs([*run_dirs, *(baseline or [])])
        for folder in folders:
            check_run_dir(folder)
    except NotARunError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from swarm_tune.analysis.load import load_run
    from swarm_tune.analysis.report import DEFAULT_TARGET_FRACTION, write_report
    from swarm_tune.runtime.progress import progress_bar

    fraction = DEFAULT_TARGET_FRACTION if target_fraction is None else target_fraction
    steps = len(folders) + 1  # each run's tables, then the plots and the page
    error: NotARunError | None = None
    with progress_bar("report", "steps") as update:  # a sweep's hundreds of runs take a while
        runs = []
        try:
            for done, folder in enumerate(folders):
                update(done, steps, folder.name)
                runs.append(load_run(folder))
        except NotARunError as exc:
            error = exc
        else:
            update(len(folders), steps, "plots")
            target = write_report(runs, out or runs[0].path, title=title, target_fraction=fraction)
    if error is not None:  # after the bar is gone: the error line stands alone
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    typer.echo(str(target))
