"""Command groups whose sub-commands are imported the first time they are used.

Why: every area of swarm-tune has heavy imports (torch, py-libp2p, matplotlib, pandas) and
the CLI used to import all of them on every start - 3-4 s here before ``swarm-tune sim run``
could print anything, and again in each of the many subprocesses the tests start. A command
now costs only the imports of its own area. ``--help`` on a group still loads that group's
commands (it shows their help lines).

A table entry names a module and an attribute: a ``typer.Typer`` sub-app (mounted as a group,
as ``add_typer`` does) or a command function (mounted as one command, as ``app.command``
does).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import typer
import typer.main
from typer import _click as click  # typer (pinned) vendors click; its groups use these types
from typer.core import TyperGroup

LazyTable = Mapping[str, tuple[str, str]]  # command name -> (module, attribute)


def lazy_group(table: LazyTable) -> type[TyperGroup]:
    """A group class for ``typer.Typer(cls=...)`` that adds ``table``'s commands on demand."""

    class LazyGroup(TyperGroup):
        def list_commands(self, ctx: click.Context) -> list[str]:
            eager = super().list_commands(ctx)
            return [*eager, *(name for name in table if name not in eager)]

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            if cmd_name in table and cmd_name not in self.commands:
                self.add_command(load_command(cmd_name, *table[cmd_name]), cmd_name)
            return super().get_command(ctx, cmd_name)

    return LazyGroup


def load_command(name: str, module: str, attribute: str) -> click.Command:
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        command: click.Command = typer.main.get_group(target)
    else:
        single = typer.Typer()
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command
