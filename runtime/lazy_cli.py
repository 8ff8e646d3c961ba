"""Command groups whose sub-commands are imported the first time they are used.

Why: every area of swarm-tune has heavy imports (torch, py-libp2p, matplotlib, pandas) and
the CLI used to import all of them on every start - 3-4 s here before ``swarm-tune sim run``
could print anything, and again in each of the many subprocesses the tests start. A command
now costs only the imports of its own area. ``--help`` on a group still loads that group's
commands (it shows their help lines).

A table entry names a module, an attribute and the command's one-line help: a ``typer.Typer``
sub-app (mounted as a group, as ``add_typer`` does) or a command function (mounted as one
command, as ``app.command`` does). The help line is what ``--help`` on the group prints, so
listing the commands imports none of them (root ``--help`` went from ~4 s to ~0.2 s); a test
holds each line equal to the first line of the loaded command's own help, so the two never
drift apart.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import typer
import typer.main
from typer import _click as click  # typer (pinned) vendors click; its groups use these types
from typer.core import TyperCommand, TyperGroup

LazyTable = Mapping[str, tuple[str, str, str]]  # command name -> (module, attribute, help)


def lazy_group(table: LazyTable) -> type[TyperGroup]:
    """A group class for ``typer.Typer(cls=...)`` that adds ``table``'s commands on demand.

    ``get_command`` (what help listings call) answers with a placeholder that carries only
    the table's help line; ``resolve_command`` (what running a command calls) loads the real
    one first.
    """

    class LazyGroup(TyperGroup):
        def list_commands(self, ctx: click.Context) -> list[str]:
            eager = super().list_commands(ctx)
            return [*eager, *(name for name in table if name not in eager)]

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            if cmd_name in table and cmd_name not in self.commands:
                return TyperCommand(cmd_name, help=table[cmd_name][2])
            return super().get_command(ctx, cmd_name)

        def resolve_command(
            self, ctx: click.Context, args: list[str]
        ) -> tuple[str | None, click.Command | None, list[str]]:
            if args and args[0] in table and args[0] not in self.commands:
                module, attribute, _ = table[args[0]]
                self.add_command(load_command(args[0], module, attribute), args[0])
            return super().resolve_command(ctx, args)

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
