"""The ``swarm-tune`` command line.

One typer app; each area of the project contributes a sub-app or commands from its own
module, named in ``COMMANDS`` and imported only when used, so that this file stays a table of
contents rather than a second home for logic.
"""

from __future__ import annotations

import typer

import swarm_tune
from swarm_tune.runtime.lazy_cli import lazy_group

# Each area's commands, imported when used (see lazy_cli.py); help lists them in this order.
COMMANDS = {
    "config": ("swarm_tune.runtime.ops.cli", "config_app"),
    "manifest": ("swarm_tune.runtime.ops.cli", "manifest_app"),
    "join": ("swarm_tune.runtime.ops.cli", "join"),
    "sim": ("swarm_tune.sim.cli", "sim_app"),
    "report": ("swarm_tune.analysis.cli", "report"),
    "checkpoint": ("swarm_tune.runtime.ops.eval_cli", "checkpoint_app"),
    "benchmark": ("swarm_tune.runtime.ops.eval_cli", "benchmark"),
    "compete": ("swarm_tune.runtime.ops.eval_cli", "compete"),
    "node": ("swarm_tune.runtime.net.node_main", "node"),
    "relay": ("swarm_tune.runtime.net.node_main", "relay"),
    "swarm": ("swarm_tune.runtime.ops.swarm", "swarm_app"),
}

app = typer.Typer(
    name="swarm-tune",
    help="Decentralised fine-tuning over libp2p, proven first in simulation.",
    no_args_is_help=True,
    add_completion=False,
    cls=lazy_group(COMMANDS),
)


@app.callback()
def _root() -> None:
    """Decentralised fine-tuning over libp2p, proven first in simulation."""


@app.command()
def version() -> None:
    """Print the installed swarm-tune version."""
    typer.echo(swarm_tune.__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
