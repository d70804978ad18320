"""Self-service policy on the real login path: turned-off actions and the helper's own checks.

The backends (snapshots, rebuild, keys) have their own tests in
test_selfservice.py; here the question is only who may ask for what.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from .lab import Lab, Student

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def quiet(lab: Lab) -> Iterator[Student]:
    """A student whose container stays stopped: every request here is refused before it."""
    made = lab.add_student("pol")
    try:
        yield made
    finally:
        lab.admin("remove", made.name, "--purge", check=False)


@pytest.mark.parametrize(
    "command", ["rebuild --yes", "snapshot", "snapshot mine", "restore mine --yes", "keys", "stop"]
)
def test_turned_off_actions_are_refused_by_the_helper(lab: Lab, quiet: Student, command: str) -> None:
    word = command.split()[0]
    with lab.setting_added("disabled_actions: [rebuild, snapshot, restore, keys, stop]\n"):
        result = lab.ssh(quiet, command)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr == f"gpushell: {word} is turned off on this host; ask your admin\n"
    assert result.stdout == ""
    assert lab.state(quiet) == "STOPPED"
    # the same request with the setting gone is no longer refused for that reason
    if command == "stop":
        allowed = lab.ssh(quiet, "stop")
        assert allowed.returncode == 0, allowed.stderr
        assert "stopped" in allowed.stdout


def test_turned_off_actions_leave_the_menu(lab: Lab, quiet: Student) -> None:
    with lab.setting_added("disabled_actions: [rebuild, delete-snapshot]\n"):
        result = lab.ssh(quiet, options=["-tt"], command_input="quit\n")
    lab.ssh(quiet, "stop")  # the login started it; the other tests here want it stopped
    assert result.returncode == 0, result.stderr
    menu = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.split("gpushell>")[0])
    assert " rebuild " not in menu and " delete-snapshot " not in menu
    assert " 9) keys " in menu and "11) quit " in menu


def test_a_bad_setting_is_refused_with_its_line(lab: Lab, quiet: Student) -> None:
    with lab.setting_added("disabled_actions: [status]\n"):
        result = lab.ssh(quiet, "status")
        admin = lab.admin("list", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert admin.returncode != 0
    assert "disabled_actions: 'status': can turn off only" in admin.stderr


def helper_as(student: Student, lab: Lab, verb: str, request: str) -> subprocess.CompletedProcess[str]:
    """The helper through sudo exactly as the login shell runs it, with a hand-made request."""
    return subprocess.run(
        ["runuser", "-u", student.name, "--", "/usr/bin/sudo", "-n", lab.paths["helper"], verb],
        input=request, capture_output=True, text=True, timeout=120, env=ENV,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("verb", "request_text", "message"),
    [
        ("restore", "name=../../etc\nconfirm={me}\n", "status=2"),
        ("restore", "name=/tmp\nconfirm={me}\n", "status=2"),
        ("delete-snapshot", "name=x y\nconfirm={me}\n", "status=2"),
        ("snapshot", "name=..\n", "status=2"),
        ("restore", "name=snap1\n", "error=not confirmed; nothing changed"),
        ("rebuild", "home=wipe\nconfirm=root\n", "error=not confirmed; nothing changed"),
        ("delete-snapshot", "name=snap1\nconfirm=\n", "error=not confirmed; nothing changed"),
    ],
)
def test_the_helper_checks_names_and_confirmation_itself(
    lab: Lab, quiet: Student, verb: str, request_text: str, message: str
) -> None:
    """Even a request the login shell would never send is checked again as root.

    A bad name is a malformed request (status 2, which the student's side
    shows only as "contact your administrator": the login shell never sends
    one); a missing confirmation is said as it is.
    """
    result = helper_as(quiet, lab, verb, request_text.format(me=quiet.name))
    assert result.returncode != 0
    assert message in result.stdout, result.stdout
    assert lab.state(quiet) == "STOPPED"
