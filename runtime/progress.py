"""One progress bar for every command that can take more than a few seconds.

Why one module: ``sim run``, ``sim sweep``, ``sim baseline``, ``sim regress``, ``sim matrix``,
``report``, ``benchmark``, ``compete`` and ``checkpoint reconstruct`` all report "done of
total, how long left" the same
way, and a user who has seen one bar should be able to read the others. The bar is drawn on
stderr, so stdout stays the command's result (``--json`` stays parseable), and it is transient:
what remains on screen is the command's own one-screen summary. On a pipe or in a test it draws
nothing at all, not even the closing newline, so captured output is the result alone.

The runners never import Rich: they take a plain ``update(done, total, note)`` callable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Update = Callable[[int, int, str], None]
"""``update(done, total, note)``: ``done`` of ``total`` units, ``note`` a short status."""


def _ignore(done: int, total: int, note: str) -> None:
    return None


@contextlib.contextmanager
def progress_bar(what: str, unit: str, console: Console | None = None) -> Iterator[Update]:
    """A transient bar ``what [####    ] 3/10 unit  note  elapsed  ETA`` on ``console``
    (default: stderr). The real total comes with the first update."""
    console = console if console is not None else Console(stderr=True)
    if not console.is_terminal:
        yield _ignore
        return
    columns = (
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),  # "?" for the total until the first update brings it
        TextColumn(unit),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(what, total=None, note="")

        def update(done: int, total: int, note: str) -> None:
            bar.update(task, completed=done, total=total, note=note)

        yield update
