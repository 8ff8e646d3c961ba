"""Operator commands: ``config show``, ``config peer-id``, ``join``, ``manifest ...``.

Why exit code 2 and no traceback on bad input: these commands are run by people setting
up a node, often over SSH at the start of a campaign. A traceback hides the one thing
they need (which variable is wrong and what it should be); the validation layer already
produced exactly that, one line per field, so we print it to stderr and stop. Exit code 2
is the conventional "usage/config error", distinct from 1 for runtime failures.

This module only wires arguments to the ops functions and formats output; rules live in
``settings``, ``manifest`` and ``join`` so other commands (``node``) reuse them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from swarm_tune.runtime.ops.join import (
    DEFAULT_IMAGE,
    JoinError,
    plan_join,
    start_commands,
    write_env_file,
)
from swarm_tune.runtime.ops.manifest import (
    ManifestError,
    find_manifest,
    load_manifests,
    set_bootstrap_peers,
)
from swarm_tune.runtime.ops.peer_id import parse_seed_hex, peer_id_from_seed
from swarm_tune.runtime.ops.settings import (
    NodeSettings,
    SettingsError,
    env_name,
    load_settings,
    unknown_env_vars,
)

__all__ = ["config_app", "join", "manifest_app"]

config_app = typer.Typer(
    help="Inspect the node configuration (SWARM_* / .env).", no_args_is_help=True
)
manifest_app = typer.Typer(help="Check and edit run manifests in runs/.", no_args_is_help=True)

EnvFileOpt = Annotated[
    Path | None,
    typer.Option("--env-file", help="Read this .env file instead of ./.env."),
]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder holding *.json manifests.")]


def _readable_runs(runs_dir: Path) -> Path:
    """``runs/`` here when there is one; otherwise (an installed wheel, run from anywhere) the
    manifests shipped with the package. Only readers fall back: set-bootstrap writes ./runs."""
    if runs_dir == Path("runs") and not runs_dir.is_dir():
        from swarm_tune.runtime.resources import shipped_dir

        return shipped_dir("runs")
    return runs_dir


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _load(env_file: Path | None) -> NodeSettings:
    try:
        return load_settings(env_file=env_file)
    except SettingsError as exc:
        raise _fail(str(exc)) from None


def _sources(settings: NodeSettings, env_file: Path | None) -> dict[str, str]:
    from dotenv import dotenv_values

    path = env_file if env_file is not None else Path(".env")
    in_file = {k.upper() for k in dotenv_values(path)} if path.is_file() else set()
    in_env = {k.upper() for k in os.environ}
    out = {}
    for field in NodeSettings.model_fields:
        name = env_name(field)
        out[field] = "env" if name in in_env else path.name if name in in_file else "default"
    return out


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    env_file: EnvFileOpt = None,
) -> None:
    """Print the effective settings (secrets masked); exit 2 if any setting is invalid."""
    settings = _load(env_file)
    for name in unknown_env_vars(env_file if env_file is not None else Path(".env")):
        typer.echo(f"warning: {name} is not a known setting (typo?); it is ignored", err=True)
    values = settings.masked_dict()
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    sources = _sources(settings, env_file)
    table = Table(title="swarm-tune settings", show_lines=False)
    table.add_column("variable", style="cyan", no_wrap=True)
    table.add_column("value")
    table.add_column("from", style="dim")
    for field, value in values.items():
        shown = (
            ""
            if value is None
            else json.dumps(value)
            if isinstance(value, list | dict)
            else str(value)
        )
        table.add_row(env_name(field), shown, sources[field])
    Console(width=max(100, Console().width)).print(table)


@config_app.command("params")
def config_params(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print docs/protocol-parameters.md.")
    ] = False,
) -> None:
    """Every protocol parameter: scenario key, SWARM_ variable, default, unit, range, doc."""
    from swarm_tune.runtime.ops.protocol_fields import params_markdown, params_table

    if markdown:
        typer.echo(params_markdown(), nl=False)
        return
    table = Table(title="protocol parameters (runtime/protocol/config.py)")
    for col in ("scenario", "env", "default", "unit", "range", "doc"):
        table.add_column(col, no_wrap=col != "doc")
    for row in params_table():
        table.add_row(*(row[c] for c in ("scenario", "env", "default", "unit", "range", "doc")))
    Console(width=max(160, Console().width)).print(table)


@config_app.command("peer-id")
def config_peer_id(
    seed: Annotated[
        str | None, typer.Option("--seed", help="64 hex digits; default SWARM_NODE_KEY_SEED.")
    ] = None,
    env_file: EnvFileOpt = None,
) -> None:
    """Print the libp2p peer id that a node key seed produces."""
    if seed is None:
        secret = _load(env_file).node_key_seed
        if secret is None:
            raise _fail("SWARM_NODE_KEY_SEED: not set; pass --seed or set it")
        seed = secret.get_secret_value()
    try:
        typer.echo(peer_id_from_seed(parse_seed_hex(seed)))
    except ValueError as exc:
        raise _fail(f"--seed: {exc}") from None


def join(
    run_id: Annotated[str, typer.Option("--run-id", help="run_id of a manifest in runs/.")],
    node_index: Annotated[int, typer.Option("--node-index", help="Your node number, from 0.")],
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or mps.")] = "cpu",
    out: Annotated[Path, typer.Option("--out", help="Where to write the .env file.")] = Path(
        ".env"
    ),
    runs_dir: RunsDirOpt = Path("runs"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite a different .env.")] = False,
    listen_port: Annotated[int, typer.Option("--listen-port")] = 4001,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="0 disables.")] = 9100,
    image: Annotated[str, typer.Option("--image", help="Docker image to print.")] = DEFAULT_IMAGE,
) -> None:
    """Write the .env for node N of a run and print how to start it."""
    try:
        path, manifest = find_manifest(_readable_runs(runs_dir), run_id)
        plan = plan_join(
            manifest,
            path,
            node_index,
            device=device,
            listen_port=listen_port,
            metrics_port=metrics_port,
        )
        status = write_env_file(out, plan.text, force=force)
    except (ManifestError, JoinError, SettingsError) as exc:
        raise _fail(str(exc)) from None
    who = manifest.participant(node_index)
    verb = "unchanged" if status == "same" else "wrote"
    team = f", team {who.team}" if who.team else ""
    shard = f"shard {who.shard_index} of {manifest.shards.num_shards}"
    typer.echo(f"{verb} {out} for node {node_index} of {manifest.run_id}{team} ({shard})")
    if not manifest.bootstrap_peers:
        typer.echo(
            "note: this manifest has no bootstrap peers yet; the organiser sets them with "
            "`swarm-tune manifest set-bootstrap /ip4/.../tcp/4001/p2p/<peer id>`",
            err=True,
        )
    native, sourced, docker = start_commands(out, plan.env, image)
    typer.echo("\nstart the node:")
    typer.echo(f"  {native}")
    typer.echo(f"  # or: {sourced}")
    typer.echo("\nor with docker:")
    typer.echo(f"  {docker}")


@manifest_app.command("validate")
def manifest_validate(runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Check every manifest; print one line per problem and exit 2 if any is invalid."""
    runs_dir = _readable_runs(runs_dir)
    good, bad = load_manifests(runs_dir)
    if not good and not bad:
        raise _fail(f"{runs_dir}: no *.json manifests found")
    for path, manifest in good.items():
        typer.echo(f"ok  {path}  ({manifest.run_id}, {manifest.node_count} nodes)")
    if bad:
        raise _fail("\n".join(str(e) for e in bad))


@manifest_app.command("set-bootstrap")
def manifest_set_bootstrap(
    peers: Annotated[list[str], typer.Argument(help="Bootstrap peer multiaddr(s).")],
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Set bootstrap_peers of every manifest (all or nothing, atomic, idempotent)."""
    try:
        changed = set_bootstrap_peers(runs_dir, peers)
    except ManifestError as exc:
        raise _fail(str(exc)) from None
    if not changed:
        typer.echo("all manifests already use these bootstrap peers; nothing changed")
    for path in changed:
        typer.echo(f"updated {path}")
