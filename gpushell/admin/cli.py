"""gpushell-admin's command line as a table: each command with its arguments
and the function that runs it, turned into an argparse parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


class Options(argparse.Namespace):
    """The parsed command line: one attribute per argument, `run` the command's function."""


class Arg:
    """One argument, as argparse's add_argument takes it."""

    __slots__ = ("flags", "options")

    def __init__(self, *flags: str, **options: object) -> None:
        self.flags, self.options = flags, options


class Command:
    """A command word with its arguments, and either a function to run or subcommands."""

    __slots__ = ("args", "description", "dest", "epilog", "help", "metavar", "name", "run", "subcommands")

    def __init__(
        self,
        name: str,
        help: str,  # argparse's name for it
        description: str,
        args: Sequence[Arg] = (),
        run: Callable[..., int] | None = None,
        subcommands: Sequence[Command] = (),
        dest: str = "",  # where the chosen subcommand's name goes
        metavar: str = "ACTION",  # what usage calls the subcommand
        epilog: str | None = None,
    ) -> None:
        self.name, self.help, self.description, self.epilog = name, help, description, epilog
        self.args, self.run, self.subcommands = tuple(args), run, tuple(subcommands)
        self.dest, self.metavar = dest, metavar


def build_parser(top: Command) -> argparse.ArgumentParser:
    """The whole table as an argparse parser."""
    parser = argparse.ArgumentParser(prog=top.name, description=top.description, epilog=top.epilog)
    _fill(parser, top)
    return parser


def _fill(parser: argparse.ArgumentParser, command: Command) -> None:
    for arg in command.args:
        parser.add_argument(*arg.flags, **arg.options)  # type: ignore[arg-type]
    if command.subcommands:
        # A command with its own `run` as well runs that when no subcommand is named.
        choices = parser.add_subparsers(
            dest=command.dest, required=command.run is None, metavar=command.metavar
        )
        for sub in command.subcommands:
            _fill(choices.add_parser(sub.name, help=sub.help, description=sub.description), sub)
    if command.run is not None or not command.subcommands:
        parser.set_defaults(run=command.run)
