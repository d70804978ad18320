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
from gpushell.helper.verbs import SERVE

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
    second_words = "(?: build| list| use| migrate| sync| revoke)?"
    sections = re.findall(rf"^\.SS (\S+{second_words})", page, flags=re.MULTILINE)
    assert sections == [
        "init", "template build", "template list", "template use", "add", "remove", "move", "set", "list",
        "apply", "doctor", "storage migrate", "driver sync", "tick", "publish\\-gpus", "loans",
        "loans revoke", "report", "expire",
    ]  # fmt: skip


@pytest.mark.parametrize("page", sorted(f"man/{path.name}" for path in (TOP / "man").iterdir()))
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


def unit(name: str) -> dict[str, dict[str, str]]:
    """A systemd unit file's sections and keys (comments and blank lines left out)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (TOP / "etc" / name).read_text().splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key] = value
    return sections


SYSTEMD_UNITS = sorted(path.name for path in (TOP / "etc").iterdir() if path.suffix in (".service", ".timer"))


def test_make_install_installs_and_uninstall_removes_every_systemd_unit() -> None:
    assert SYSTEMD_UNITS == [
        "gpushell-apply.service",
        "gpushell-helper.service",
        "gpushell-publish-gpus.service",
        "gpushell-publish-gpus.timer",
        "gpushell-tick.service",
        "gpushell-tick.timer",
    ]
    makefile = (TOP / "Makefile").read_text()
    install, _, uninstall = makefile.partition("\nuninstall:")
    for name in SYSTEMD_UNITS:
        assert f"install -D -m 0644 etc/{name} /etc/systemd/system/{name}\n" in install
        assert f"/etc/systemd/system/{name}" in uninstall.partition("\n\n")[0]


def test_the_tick_timer_runs_gpushell_admin_tick_every_minute() -> None:
    service, timer = unit("gpushell-tick.service"), unit("gpushell-tick.timer")
    assert service["Service"] == {"Type": "oneshot", "ExecStart": "/usr/local/bin/gpushell-admin tick"}
    assert service["Unit"]["After"] == "gpushell-apply.service"  # apply's loans step first at boot
    assert timer["Timer"]["OnCalendar"] == "minutely"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert "Install" not in service  # the timer starts it
    args = commands.build_parser().parse_args(["tick"], namespace=commands.Options())
    assert args.run is commands.cmd_tick


def test_the_helper_service_runs_the_server_and_stops_only_it() -> None:
    service = unit("gpushell-helper.service")
    assert service["Service"]["ExecStart"] == "/usr/local/bin/gpushell-helper --serve"
    assert service["Service"]["Restart"] == "always"
    assert service["Service"]["KillMode"] == "process"  # a login's work in flight finishes
    assert service["Install"]["WantedBy"] == "multi-user.target"
    assert service["Service"]["ExecStart"].split()[1:] == [SERVE]


def test_a_members_timer_publishes_its_gpus_every_20_seconds() -> None:
    service, timer = unit("gpushell-publish-gpus.service"), unit("gpushell-publish-gpus.timer")
    assert service["Service"] == {
        "Type": "oneshot",
        "ExecStart": "/usr/local/bin/gpushell-admin publish-gpus",
    }
    assert timer["Timer"]["OnCalendar"] == "*:*:0/20" and timer["Install"]["WantedBy"] == "timers.target"
    assert "Install" not in service
    args = commands.build_parser().parse_args(["publish-gpus"], namespace=commands.Options())
    assert (args.socket, args.project, args.verbose) == (None, "gpushell", False)
