"""The files in etc/ and man/ match the code that uses or describes them."""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import subprocess

import pytest

from gpushell.admin import commands
from gpushell.core import dropins, paths, registry

TOP = pathlib.Path(__file__).resolve().parents[1]


def test_example_registry_loads() -> None:
    reg = registry.parse((TOP / "etc/gpushell.yaml").read_text(), "etc/gpushell.yaml")
    assert sorted(reg.users) == ["alice", "bob"]
    assert reg.users["alice"].port == 22001
    assert reg.users["bob"].gpus == (0,)


@pytest.mark.parametrize(
    ("shipped", "generate"),
    [("etc/sudoers.gpushell", dropins.sudoers), ("etc/sshd_config.gpushell.conf", dropins.sshd)],
)
def test_shipped_dropins_are_what_init_installs(shipped: str, generate: object) -> None:
    assert (TOP / shipped).read_text() == generate(paths.DEFAULT)  # type: ignore[operator]


def all_options(parser: argparse.ArgumentParser) -> set[str]:
    found = {opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= all_options(sub)
    return found


def test_admin_man_page_lists_exactly_the_argparse_options() -> None:
    page = (TOP / "man/gpushell-admin.8").read_text()
    names = re.findall(r"\\fB\\-\\-([a-z](?:[a-z]|\\?-)*)", page)
    documented = {"--" + name.replace("\\", "") for name in names}
    assert documented == all_options(commands.build_parser())


def test_admin_man_page_has_a_section_per_command() -> None:
    page = (TOP / "man/gpushell-admin.8").read_text()
    sections = re.findall(r"^\.SS (\S+(?: build| list| use| migrate| sync)?)", page, flags=re.MULTILINE)
    assert sections == [
        "init", "template build", "template list", "template use", "add", "remove", "set", "list",
        "apply", "doctor", "storage migrate", "driver sync",
    ]  # fmt: skip


@pytest.mark.parametrize("page", ["man/gpushell.1", "man/gpushell-admin.8", "man/gpushell.yaml.5"])
def test_man_pages_render_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is missing; `make test` installs groff-base")
    result = subprocess.run([groff, "-man", "-ww", "-z", str(TOP / page)], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


def test_student_man_page_lists_every_action_with_its_number() -> None:
    page = (TOP / "man/gpushell.1").read_text()
    from gpushell.core.menu import MENU_WORDS

    for number, word in enumerate(MENU_WORDS, 1):
        roff_word = word.replace("-", "\\-")  # a hyphen in roff source is written \-
        assert f'.BR {number} ", " {roff_word}' in page
