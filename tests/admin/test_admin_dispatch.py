"""gpushell-admin's parser names commands that editing, imported only when one runs, really has."""

from __future__ import annotations

import argparse

import pytest

from gpushell.admin import commands, editing
from gpushell.core.paths import Paths


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["template", "list"], "cmd_template_list"),
        (["template", "use", "other"], "cmd_template_use"),
        (["set", "alice", "gpus=none"], "cmd_set"),
    ],
)
def test_lazily_imported_commands_reach_editing(argv, command, monkeypatch) -> None:
    called: list[tuple[str, argparse.Namespace]] = []
    monkeypatch.setattr(editing, command, lambda paths, args, say: called.append((command, args)) or 0)
    args = commands.build_parser().parse_args(argv)
    assert args.run(Paths(), args) == 0
    assert [name for name, _ in called] == [command]
