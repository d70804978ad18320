"""gpushell-admin's command line: the table in commands.py, read by argparse."""

from __future__ import annotations

import pytest

from gpushell.admin import commands
from gpushell.admin.cli import Options


def parse(argv: list[str]) -> Options:
    return commands.build_parser().parse_args(argv, namespace=Options())


def test_commands_reach_their_functions_with_their_defaults() -> None:
    args = parse(["apply"])
    assert (args.command, args.dry_run, args.registry, args.run) == ("apply", False, None, commands.cmd_apply)
    assert parse(["list", "--json"]).json is True
    assert parse(["driver", "sync"]).users == []


def test_options_values_and_abbreviations() -> None:
    args = parse(["--registry", "/tmp/r.yaml", "apply", "--dry"])
    assert (args.registry, args.dry_run, args.run) == ("/tmp/r.yaml", True, commands.cmd_apply)
    assert parse(["driver", "sync", "alice"]).users == ["alice"]
    assert parse(["add", "bob", "--gpus", "2,0"]).gpus == [0, 2]


MISTAKES = [[], ["nosuch"], ["template"], ["apply", "now"], ["add"], ["add", "a", "--gpus", "1,1"]]


@pytest.mark.parametrize("argv", MISTAKES)
def test_mistakes_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
