"""The ``swarm-tune`` command line.

One typer app; each area of the project contributes a sub-app from its own module so that
this file stays a table of contents rather than a second home for logic.
"""

from __future__ import annotations

import typer

import swarm_tune

app = typer.Typer(
    name="swarm-tune",
    help="Decentralised fine-tuning over libp2p, proven first in simulation.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Decentralised fine-tuning over libp2p, proven first in simulation."""


@app.command()
def version() -> None:
    """Print the installed swarm-tune version."""
    typer.echo(swarm_tune.__version__)


# --- sub-apps: each area registers its commands here, one line each ---------------------
# (keep imports inside this block; one area per line so parallel edits do not collide)
from swarm_tune.runtime.ops import cli as ops_cli  # noqa: E402

app.add_typer(ops_cli.config_app, name="config")
app.add_typer(ops_cli.manifest_app, name="manifest")
app.command("join")(ops_cli.join)
from swarm_tune.sim.cli import sim_app  # noqa: E402

app.add_typer(sim_app, name="sim")
from swarm_tune.runtime.ops import eval_cli  # noqa: E402

app.add_typer(eval_cli.checkpoint_app, name="checkpoint")
app.command("benchmark")(eval_cli.benchmark)
app.command("compete")(eval_cli.compete)
from swarm_tune.runtime.net import node_main  # noqa: E402

node_main.register(app)
from swarm_tune.analysis.cli import report as analysis_report  # noqa: E402

app.command("report")(analysis_report)
from swarm_tune.sim import sweep_cli  # noqa: E402

sweep_cli.register(sim_app)
from swarm_tune.runtime.ops.swarm import swarm_app  # noqa: E402

app.add_typer(swarm_app, name="swarm")
# --- end of sub-apps -------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
