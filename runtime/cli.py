"""The ``swarm-tune`` command line.

One typer app; each area of the project contributes a sub-app or commands from its own
module, named in ``COMMANDS`` and imported only when used, so that this file stays a table of
contents rather than a second home for logic.
"""

from __future__ import annotations

import typer

import swarm_tune
from swarm_tune.runtime.lazy_cli import lazy_group

# Each area's commands, imported when used (see lazy_cli.py); help lists them in this order,
# with the help line given here (a test keeps it equal to the command's own).
COMMANDS = {
    "config": (
        "swarm_tune.runtime.ops.cli",
        "config_app",
        "Inspect the node configuration (SWARM_* / .env).",
    ),
    "manifest": (
        "swarm_tune.runtime.ops.cli",
        "manifest_app",
        "Check and edit run manifests in runs/.",
    ),
    "join": (
        "swarm_tune.runtime.ops.cli",
        "join",
        "Write the .env for node N of a run and print how to start it.",
    ),
    "sim": ("swarm_tune.sim.cli", "sim_app", "Simulate a swarm in virtual time (SimPy)."),
    "report": (
        "swarm_tune.analysis.cli",
        "report",
        "Write a self-contained HTML report (plots + tables) for one or many runs.",
    ),
    "checkpoint": (
        "swarm_tune.runtime.eval.cli",
        "checkpoint_app",
        "Turn node checkpoints into a model and publish it.",
    ),
    "benchmark": (
        "swarm_tune.runtime.eval.cli",
        "benchmark",
        "Perplexity of a checkpoint on a held-out split (deterministic, with hashes).",
    ),
    "compete": (
        "swarm_tune.runtime.eval.cli",
        "compete",
        "Evaluate two teams' checkpoints on the same data and write a verifiable result.",
    ),
    "node": (
        "swarm_tune.runtime.net.node_main",
        "node",
        "Run a training node from SWARM_* settings (options override them).",
    ),
    "relay": (
        "swarm_tune.runtime.net.node_main",
        "relay",
        "Run a relay: P2P only, no model; prints its multiaddr for others to bootstrap from.",
    ),
    "swarm": (
        "swarm_tune.runtime.ops.swarm",
        "swarm_app",
        "A local swarm of real node processes on loopback (docker-compose without Docker).",
    ),
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
