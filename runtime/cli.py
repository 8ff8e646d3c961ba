"""The ``swarm-tune`` command line.

One typer app; each area of the project contributes a sub-app from its own module so that
this file stays a table of contents rather than a second home for logic.
"""

from __future__ import annotations

import typer

import swarm_tune
from swarm_tune.analysis.cli import report as analysis_report
from swarm_tune.runtime.net import node_main
from swarm_tune.runtime.ops import cli as ops_cli
from swarm_tune.runtime.ops import eval_cli
from swarm_tune.runtime.ops.swarm import swarm_app
from swarm_tune.sim import sweep_cli
from swarm_tune.sim.cli import sim_app

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


# --- sub-apps: one line per area; the logic lives in each area's own module ---------------
app.add_typer(ops_cli.config_app, name="config")
app.add_typer(ops_cli.manifest_app, name="manifest")
app.command("join")(ops_cli.join)
app.add_typer(sim_app, name="sim")
sweep_cli.register(sim_app)
app.command("report")(analysis_report)
app.add_typer(eval_cli.checkpoint_app, name="checkpoint")
app.command("benchmark")(eval_cli.benchmark)
app.command("compete")(eval_cli.compete)
node_main.register(app)
app.add_typer(swarm_app, name="swarm")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
