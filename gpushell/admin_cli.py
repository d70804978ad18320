"""gpushell-admin's command line: one table of commands, read two ways.

argparse gives the help, the usage errors and every form of option, but
importing it (with `re`, `enum` and `gettext`) and building the parser
cost each command ~13 ms: a fifth of a thousand-student `apply`, which
also runs at every boot.  An argv of nothing but command words and flags
spelled out in full (`apply`, `apply --dry-run`, `list --json`) is read
from the same table directly; anything else, `--help`, values and every
mistake included, goes to argparse.  Both give the same Options
(tests/unit/test_admin_cli.py checks every such argv against argparse).
"""

from __future__ import annotations

from types import SimpleNamespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence


class Options(SimpleNamespace):
    """The parsed command line: one attribute per argument, `run` the command's function."""


class Arg:
    """One argument, as argparse's add_argument takes it."""

    __slots__ = ("flags", "options")

    def __init__(self, *flags: str, **options: object) -> None:
        self.flags, self.options = flags, options

    @property
    def dest(self) -> str:
        named = [flag for flag in self.flags if flag.startswith("--")] or list(self.flags)
        return str(self.options.get("dest", named[0].lstrip("-").replace("-", "_")))

    @property
    def stored(self) -> bool:
        return self.options.get("action") != "version"

    @property
    def is_flag(self) -> bool:
        return self.options.get("action") == "store_true"

    @property
    def required(self) -> bool:
        """A positional that must be given (the quick path never reads values)."""
        return not self.flags[0].startswith("-") and self.options.get("nargs") not in ("*", "?")

    @property
    def default(self) -> object:
        if self.is_flag:
            return self.options.get("default", False)
        if self.options.get("nargs") == "*" and not self.flags[0].startswith("-"):
            return self.options.get("default", [])
        return self.options.get("default")


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
    """The whole table as an argparse parser: help, errors, every form of option."""
    import argparse

    parser = argparse.ArgumentParser(prog=top.name, description=top.description, epilog=top.epilog)
    _fill(parser, top)
    return parser


def _fill(parser: argparse.ArgumentParser, command: Command) -> None:
    for arg in command.args:
        parser.add_argument(*arg.flags, **arg.options)  # type: ignore[arg-type]
    if command.subcommands:
        choices = parser.add_subparsers(dest=command.dest, required=True, metavar=command.metavar)
        for sub in command.subcommands:
            _fill(choices.add_parser(sub.name, help=sub.help, description=sub.description), sub)
    else:
        parser.set_defaults(run=command.run)


def quick_parse(top: Command, argv: Sequence[str]) -> Options | None:
    """Options for an argv of command words and whole flags only; None: ask argparse."""
    words = list(argv)
    options = Options()
    command = top
    while True:
        for arg in command.args:
            if arg.stored:
                setattr(options, arg.dest, arg.default)
        if not command.subcommands:
            break
        chosen = [sub for sub in command.subcommands if words and sub.name == words[0]]
        if not chosen:
            return None
        setattr(options, command.dest, words.pop(0))
        command = chosen[0]
    if any(arg.required for arg in command.args):
        return None
    flags = {flag: arg for arg in command.args if arg.is_flag for flag in arg.flags}
    given = set()
    for word in words:
        flag = flags.get(word)
        if flag is None or flag.dest in given:
            return None
        setattr(options, flag.dest, True)
        given.add(flag.dest)
    options.run = command.run
    return options
