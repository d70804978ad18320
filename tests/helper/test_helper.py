"""verbs.caller_name: who called the root helper, from SUDO_UID only."""

from __future__ import annotations

import os
import pwd

import pytest

from gpushell.core import menu
from gpushell.core.errors import CONTACT_ADMIN, ExitStatus, GpushellError
from gpushell.helper import verbs


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)


def test_refused_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(GpushellError) as info:
        verbs.caller_name({"SUDO_UID": "65534"})
    assert info.value.user_message == "the helper must run through sudo"
    assert info.value.log_message == "helper run without root"
    assert info.value.status == ExitStatus.ERROR


@pytest.mark.parametrize(
    ("environ", "shown"),
    [
        ({}, "''"),
        ({"SUDO_UID": ""}, "''"),
        ({"SUDO_UID": "0"}, "'0'"),
        ({"SUDO_UID": "00"}, "'00'"),
        ({"SUDO_UID": "abc"}, "'abc'"),
        ({"SUDO_UID": "-1"}, "'-1'"),
        ({"SUDO_UID": " 1000"}, "' 1000'"),
        ({"SUDO_UID": "1000\n"}, "'1000\\n'"),
        ({"SUDO_UID": "1e3"}, "'1e3'"),
        ({"SUDO_USER": "alice"}, "''"),
    ],
)
def test_refused_sudo_uid(as_root, environ, shown):
    with pytest.raises(GpushellError) as info:
        verbs.caller_name(environ)
    assert info.value.user_message == "the helper must be run by a student through sudo"
    assert info.value.log_message == f"helper called with SUDO_UID={shown}"
    assert info.value.status == ExitStatus.USAGE


def test_unknown_uid(as_root):
    uid = 3999999999
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)
    with pytest.raises(GpushellError) as info:
        verbs.caller_name({"SUDO_UID": str(uid)})
    assert info.value.user_message == CONTACT_ADMIN
    assert info.value.log_message == f"SUDO_UID {uid} has no account"


def test_known_uid(as_root):
    expected = pwd.getpwuid(65534).pw_name
    assert verbs.caller_name({"SUDO_UID": "65534", "SUDO_USER": "root", "USER": "root"}) == expected


def test_actions():
    assert verbs.ACTIONS["start"] is verbs.ACTIONS["login"]
    # The sudoers drop-in lists menu.HELPER_VERBS: the helper implements exactly those.
    assert sorted(verbs.ACTIONS) == sorted(menu.HELPER_VERBS)


@pytest.mark.parametrize(
    "message",
    [
        "container alice already exists in /var/lib/lxc",
        "cannot open '/run/gpushell/x': denied",
        "failed (/etc/gpushell.yaml:3)",
    ],
)
def test_a_student_never_sees_a_host_path(message: str) -> None:
    assert verbs.without_host_paths(message) == verbs.UNSAFE_MESSAGE


@pytest.mark.parametrize(
    "message",
    [
        "busy: another action of yours is running; try again in a moment",
        "check ~/.ssh/authorized_keys",
        "I/O",
    ],
)
def test_messages_without_paths_pass_unchanged(message: str) -> None:
    assert verbs.without_host_paths(message) == message
