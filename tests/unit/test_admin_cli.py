"""admin_cli: the quick reading of an argv gives exactly what argparse gives, or defers to it."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from test_login_imports import KEPT_OFF

from gpushell import admin
from gpushell.admin_cli import Command, Options, quick_parse


def leaves(command: Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Command]]:
    if not command.subcommands:
        return [(path, command)]
    return [leaf for sub in command.subcommands for leaf in leaves(sub, (*path, sub.name))]


def quick_argvs() -> list[list[str]]:
    """Every argv the quick path may take: each command with no required value, each set of its flags."""
    found = []
    for path, command in leaves(admin.COMMANDS):
        if any(arg.required for arg in command.args):
            continue
        flags = [arg.flags[0] for arg in command.args if arg.is_flag]
        for count in range(len(flags) + 1):
            found += [[*path, *chosen] for chosen in itertools.permutations(flags, count)]
    return found


def by_argparse(argv: list[str]) -> Options:
    return admin.build_parser().parse_args(argv, namespace=Options())


def test_the_quick_path_covers_the_commands_run_by_machines() -> None:
    argvs = quick_argvs()
    for expected in (["apply"], ["apply", "--dry-run"], ["doctor"], ["list", "--json"], ["init"],
                     ["template", "list", "--json"], ["driver", "sync"]):  # fmt: skip
        assert expected in argvs


@pytest.mark.parametrize("argv", quick_argvs(), ids=" ".join)
def test_quick_reading_equals_argparse(argv: list[str]) -> None:
    quick = quick_parse(admin.COMMANDS, argv)
    assert quick is not None
    assert vars(quick) == vars(by_argparse(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-h"],
        ["--help"],
        ["apply", "--help"],
        ["--version"],
        ["nosuch"],
        ["template"],
        ["apply", "--dry"],  # argparse takes abbreviations; the quick path only whole flags
        ["apply", "--dry-run", "--dry-run"],
        ["apply", "now"],
        ["add", "alice"],
        ["--registry", "/tmp/r.yaml", "apply"],
        ["apply", "--dry-run=yes"],
        ["driver", "sync", "alice"],
        ["template", "use"],
    ],
    ids=" ".join,
)
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    assert quick_parse(admin.COMMANDS, argv) is None


def test_argparse_still_reads_what_the_quick_path_leaves() -> None:
    args = by_argparse(["--registry", "/tmp/r.yaml", "apply", "--dry"])
    assert (args.registry, args.command, args.dry_run, args.run) == (
        "/tmp/r.yaml",
        "apply",
        True,
        admin.cmd_apply,
    )
    assert by_argparse(["driver", "sync", "alice"]).users == ["alice"]
    with pytest.raises(SystemExit) as exited:
        by_argparse(["apply", "now"])
    assert exited.value.code == 2


def test_apply_reads_its_command_line_and_starts_its_rebuild_without_heavy_modules() -> None:
    """What `gpushell-admin apply` imports before the chain rebuild starts (chainrebuild.py)."""
    code = (
        f"import sys; sys.path[:0] = {sys.path!r}\n"
        "from gpushell import admin, chaincheck, chainrebuild, iptables, registry_cache\n"
        "assert admin.quick_parse(admin.COMMANDS, ['apply']).run is admin.cmd_apply\n"
        "print(' '.join(sys.modules))"
    )
    result = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert "gpushell.chainrebuild" in loaded
    assert sorted(name for name in KEPT_OFF if name in loaded) == []
