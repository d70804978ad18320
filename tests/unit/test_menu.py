"""menu: what a student may ask for."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpushell.menu import (
    MENU,
    REMOTE_WORDS,
    Decision,
    decide_choice,
    decide_command,
    decide_kill_choice,
)

ALLOWED = "(allowed commands: status, start, stop, restart, gpus, help)"
TRANSFER = "copy files to your container's port instead"


@pytest.mark.parametrize("word", ["status", "start", "stop", "restart", "gpus", "help"])
def test_command_allowed(word):
    decision = decide_command(word)
    assert decision == Decision(word)
    assert decision.allowed
    assert decision.reason == ""


def test_remote_words():
    assert REMOTE_WORDS == ("status", "start", "stop", "restart", "gpus", "help")


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("bash", f"bash: not allowed here {ALLOWED}"),
        ("quit", f"quit: not allowed here {ALLOWED}"),
        ("status; id", f"status; id: not allowed here {ALLOWED}"),
        ("status && id", f"status && id: not allowed here {ALLOWED}"),
        ("status\nid", f"'status\\nid': not allowed here {ALLOWED}"),
        (" status", f" status: not allowed here {ALLOWED}"),
        ("status ", f"status : not allowed here {ALLOWED}"),
        ("STATUS", f"STATUS: not allowed here {ALLOWED}"),
        ("help me", f"help me: not allowed here {ALLOWED}"),
        ("status\x00", f"'status\\x00': not allowed here {ALLOWED}"),
        ("\x1b[2J", f"'\\x1b[2J': not allowed here {ALLOWED}"),
        (
            "/usr/lib/openssh/sftp-server",
            f"file transfer to this host is not allowed (/usr/lib/openssh/sftp-server); {TRANSFER}",
        ),
        ("scp -t x", f"file transfer to this host is not allowed (scp -t x); {TRANSFER}"),
        ("scp -f /etc/shadow", f"file transfer to this host is not allowed (scp -f /etc/shadow); {TRANSFER}"),
        (
            "rsync --server -vlogDtpre.iLsfxC . x",
            f"file transfer to this host is not allowed (rsync --server -vlogDtpre.iLsfxC . x); {TRANSFER}",
        ),
        ("internal-sftp", f"file transfer to this host is not allowed (internal-sftp); {TRANSFER}"),
        ("", "an empty command is not allowed"),
        ("   ", "an empty command is not allowed"),
        ("\n", "an empty command is not allowed"),
    ],
)
def test_command_refused(command, reason):
    decision = decide_command(command)
    assert decision.action is None
    assert not decision.allowed
    assert decision.reason == reason


def test_long_command_is_cut():
    command = "a" * 65
    decision = decide_command(command)
    assert decision.action is None
    assert decision.reason == f"{'a' * 64!r}: not allowed here {ALLOWED}"
    assert decide_command("a" * 64).reason == f"{'a' * 64}: not allowed here {ALLOWED}"
    long_transfer = "scp -t " + "x" * 1000
    assert decide_command(long_transfer).reason == (
        f"file transfer to this host is not allowed ({long_transfer[:64]!r}); {TRANSFER}"
    )


def test_control_characters_never_reach_the_message():
    decision = decide_command("status\r\x1b]0;owned\x07\x1b[31m" + "\x00" * 200)
    assert decision.action is None
    assert decision.reason.isprintable()


@settings(database=None)
@given(st.text())
def test_only_the_six_words_and_kill_with_a_pid_are_allowed(command):
    decision = decide_command(command)
    if command in REMOTE_WORDS:
        assert decision.action == command
        assert decision.argument == ""
    elif re.fullmatch(r"kill-gpu-process [0-9]{1,7}", command) and int(command.split()[1]) > 0:
        assert decision == Decision("kill-gpu-process", argument=command.split()[1])
    else:
        assert decision.action is None
        assert decision.reason
        assert decision.reason.isprintable()
        assert len(decision.reason) < 64 * 4 + 200


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("1", "status"),
        ("2", "start"),
        ("3", "stop"),
        ("4", "restart"),
        ("5", "gpus"),
        ("6", "help"),
        ("7", "quit"),
        ("gpus", "gpus"),
        ("status", "status"),
        ("START\n", "start"),
        ("  Stop  ", "stop"),
        ("\trestart\n", "restart"),
        ("Help", "help"),
        ("quit", "quit"),
        (" 3 \n", "stop"),
        ("exit", "quit"),
        ("logout", "quit"),
        ("q", "quit"),
        ("Q\n", "quit"),
        ("EXIT", "quit"),
    ],
)
def test_choice_allowed(line, action):
    assert decide_choice(line) == Decision(action)


REFUSAL = "please choose 1-7 or one of: status, start, stop, restart, gpus, help, quit"


@pytest.mark.parametrize(
    "line", ["0", "8", "-1", "sh", "", "\n", "1 2", "status;id", "01x", "+1", "1.0", "\x00"]
)
def test_choice_refused(line):
    assert decide_choice(line) == Decision(None, REFUSAL)


def test_menu_numbering():
    assert [word for word, _ in MENU] == ["status", "start", "stop", "restart", "gpus", "help", "quit"]
    for number, (word, _) in enumerate(MENU, 1):
        assert decide_choice(str(number)).action == word


def test_choice_superscript_digit_refused():
    assert decide_choice("\u00b2") == Decision(None, REFUSAL)


KILL_USAGE = "usage: kill-gpu-process PID (a process number that `gpus` shows as yours)"


@pytest.mark.parametrize("pid", ["1", "4242", "9999999"])
def test_kill_gpu_process_takes_one_pid(pid):
    assert decide_command(f"kill-gpu-process {pid}") == Decision("kill-gpu-process", argument=pid)


@pytest.mark.parametrize(
    "argument",
    ["", "0", "00", "10000000", "-1", "+1", "1 2", "12;id", "1\n", "\u0663", "$(id)", " 1", "1 ", "0x10"],
)
def test_kill_gpu_process_refuses_anything_but_a_pid(argument):
    assert decide_command(f"kill-gpu-process {argument}") == Decision(None, KILL_USAGE)


def test_kill_gpu_process_alone_is_not_a_word():
    decision = decide_command("kill-gpu-process")
    assert decision.action is None
    assert decision.reason == f"kill-gpu-process: not allowed here {ALLOWED}"


@pytest.mark.parametrize(
    ("line", "own", "chosen"),
    [("1", 2, 1), (" 2\n", 2, 2), ("3", 2, None), ("0", 2, None), ("", 2, None), ("1", 0, None),
     ("x", 2, None), ("\u00b2", 2, None), ("4242", 2, None)],
)  # fmt: skip
def test_kill_choice_is_a_number_from_the_list(line, own, chosen):
    assert decide_kill_choice(line, own) == chosen
