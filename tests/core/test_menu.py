"""menu: what a student may ask for."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpushell.core.menu import (
    LENDING_WORDS,
    MENU,
    REMOTE_WORDS,
    SNAPSHOT_NAME_RULE,
    Decision,
    confirms,
    decide_choice,
    decide_command,
    decide_kill_choice,
    decide_lending,
    decide_snapshot_pick,
    is_snapshot_name,
    lending_request,
)

ALLOWED = (
    "(allowed commands: status, start, stop, restart, gpus, snapshots, keys, help, snapshot [NAME], "
    "restore NAME --yes, delete-snapshot NAME --yes, rebuild [--wipe-home] --yes, kill-gpu-process PID, "
    "borrow N [DURATION] [--wait], extend GPU DURATION, return GPU|all)"
)
TRANSFER = "copy files to your container's port instead"


@pytest.mark.parametrize("word", ["status", "start", "stop", "restart", "gpus", "snapshots", "keys", "help"])
def test_command_allowed(word):
    decision = decide_command(word)
    assert decision == Decision(word)
    assert decision.allowed
    assert decision.reason == ""


def test_remote_words():
    assert REMOTE_WORDS == ("status", "start", "stop", "restart", "gpus", "snapshots", "keys", "help")


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
def test_only_the_grammar_is_allowed(command):
    decision = decide_command(command)
    name = r"[a-z0-9][a-z0-9_-]{0,31}"
    if command in REMOTE_WORDS:
        assert decision.action == command
        assert decision.argument == ""
    elif re.fullmatch(r"kill-gpu-process [0-9]{1,7}", command) and int(command.split()[1]) > 0:
        assert decision == Decision("kill-gpu-process", argument=command.split()[1])
    elif re.fullmatch(rf"snapshot( {name})?", command):
        assert decision == Decision("snapshot", argument=command[len("snapshot ") :])
    elif re.fullmatch(rf"(restore|delete-snapshot) {name} --yes", command):
        assert decision == Decision(command.split()[0], argument=command.split()[1])
    elif command in ("rebuild --yes", "rebuild --wipe-home --yes"):
        assert decision == Decision("rebuild", argument="--wipe-home" if "wipe" in command else "")
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
        ("6", "snapshot"),
        ("7", "snapshots"),
        ("8", "restore"),
        ("9", "delete-snapshot"),
        ("10", "rebuild"),
        ("11", "keys"),
        ("12", "help"),
        ("13", "quit"),
        ("Delete-Snapshot", "delete-snapshot"),
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
    assert decide_choice(line, NO_LENDING) == Decision(action)


NO_LENDING = LENDING_WORDS  # what the login answer turns off in a lab without `lending:`
REFUSAL = (
    "please choose 1-13 or one of: status, start, stop, restart, gpus, snapshot, snapshots, restore, "
    "delete-snapshot, rebuild, keys, help, quit"
)


@pytest.mark.parametrize(
    "line",
    ["0", "14", "0001", "-1", "sh", "", "\n", "1 2", "status;id", "01x", "+1", "1.0", "\x00", "restore x"],
)
def test_choice_refused(line):
    assert decide_choice(line, NO_LENDING) == Decision(None, REFUSAL)


def test_menu_numbering():
    """The lending rows sit after keys: a lab without lending keeps the numbers it always had."""
    assert [word for word, _ in MENU] == [
        "status", "start", "stop", "restart", "gpus", "snapshot", "snapshots", "restore", "delete-snapshot",
        "rebuild", "keys", "borrow", "extend", "return", "help", "quit",
    ]  # fmt: skip
    for number, (word, _) in enumerate(MENU, 1):
        assert decide_choice(str(number)).action == word
    assert decide_choice("12", NO_LENDING) == Decision("help")
    assert decide_choice("borrow", NO_LENDING) == Decision(None, "borrow is turned off on this host")


def test_choice_superscript_digit_refused():
    assert decide_choice("\u00b2", NO_LENDING) == Decision(None, REFUSAL)


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


def test_turned_off_actions_leave_the_menu_and_its_numbers():
    disabled = ("gpus", "rebuild", *NO_LENDING)
    assert decide_choice("5", disabled) == Decision("snapshot")
    assert decide_choice("rebuild", disabled) == Decision(None, "rebuild is turned off on this host")
    assert decide_choice("11", disabled) == Decision("quit")
    assert decide_choice("12", disabled).action is None


@pytest.mark.parametrize(
    ("command", "decision"),
    [
        ("snapshot", Decision("snapshot")),
        ("snapshot before-upgrade", Decision("snapshot", argument="before-upgrade")),
        ("snapshot a", Decision("snapshot", argument="a")),
        ("snapshot " + "x" * 32, Decision("snapshot", argument="x" * 32)),
        ("restore snap_1 --yes", Decision("restore", argument="snap_1")),
        ("delete-snapshot 2024 --yes", Decision("delete-snapshot", argument="2024")),
        ("rebuild --yes", Decision("rebuild")),
        ("rebuild --wipe-home --yes", Decision("rebuild", argument="--wipe-home")),
    ],
)
def test_self_service_grammar(command, decision):
    assert decide_command(command) == decision


RESTORE_USAGE = "usage: restore NAME --yes (NAME as `snapshots` lists it)"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("snapshot ../../etc", f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}"),
        ("snapshot " + "x" * 33, f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}"),
        ("snapshot -rf", f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}"),
        ("snapshot a b", f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}"),
        ("snapshot Upper", f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}"),
        ("snapshot ", f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}"),
        ("snapshot $(id)", f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}"),
        ("restore", RESTORE_USAGE),
        ("restore snap1", "restore replaces everything in your container with snapshot snap1; "
         "to confirm: restore snap1 --yes"),
        ("restore snap1 --YES", "restore replaces everything in your container with snapshot snap1; "
         "to confirm: restore snap1 --yes"),
        ("restore snap1 yes", "restore replaces everything in your container with snapshot snap1; "
         "to confirm: restore snap1 --yes"),
        ("restore --yes snap1", f"{RESTORE_USAGE}; {SNAPSHOT_NAME_RULE}"),
        ("restore ../bob --yes", f"{RESTORE_USAGE}; {SNAPSHOT_NAME_RULE}"),
        ("restore a --yes --yes", f"{RESTORE_USAGE}; {SNAPSHOT_NAME_RULE}"),
        ("delete-snapshot snap1",
         "delete-snapshot deletes snapshot snap1; to confirm: delete-snapshot snap1 --yes"),
        ("rebuild", "rebuild replaces your container with a fresh one and keeps your home directory; "
         "to confirm: rebuild --yes"),
        ("rebuild --wipe-home", "rebuild replaces your container with a fresh one and deletes your home "
         "directory too; to confirm: rebuild --wipe-home --yes"),
        ("rebuild --yes --wipe-home", "usage: rebuild [--wipe-home] --yes"),
        ("rebuild now", "usage: rebuild [--wipe-home] --yes"),
        ("rebuild  --yes", "usage: rebuild [--wipe-home] --yes"),
    ],
)  # fmt: skip
def test_self_service_refusals(command, reason):
    assert decide_command(command) == Decision(None, reason)


@pytest.mark.parametrize(
    ("text", "ok"),
    [("a", True), ("snap-1_x", True), ("0", True), ("x" * 32, True), ("", False), ("x" * 33, False),
     ("-a", False), ("_a", False), ("A", False), ("a/b", False), ("..", False), (".a", False),
     ("a b", False), ("\u0663", False), ("é", False), ("a\n", False)],
)  # fmt: skip
def test_snapshot_names_are_never_paths(text, ok):
    assert is_snapshot_name(text) is ok


def test_confirmation_is_the_exact_user_name():
    assert confirms("alice\n", "alice")
    assert confirms("  alice ", "alice")
    for line in ("", "y", "yes", "Alice", "alice2", "alic", "bob"):
        assert not confirms(line, "alice")


@pytest.mark.parametrize(
    ("line", "chosen"),
    [("1", "a"), (" 2\n", "b"), ("b", "b"), ("3", None), ("0", None), ("", None), ("c", None), ("B", None)],
)
def test_snapshot_pick(line, chosen):
    assert decide_snapshot_pick(line, ["a", "b"]) == chosen


@pytest.mark.parametrize(
    ("command", "argument", "fields"),
    [
        ("borrow 1", "1", {"count": "1", "wait": ""}),
        ("borrow 2 8h", "2 8h", {"count": "2", "wait": "", "duration": "8h"}),
        ("borrow 2 8h --wait", "2 8h --wait", {"count": "2", "wait": "1", "duration": "8h"}),
        ("borrow 1 --wait", "1 --wait", {"count": "1", "wait": "1"}),
        ("extend 3 2h", "3 2h", {"gpu": "3", "duration": "2h"}),
        ("extend 0 1h30m", "0 1h30m", {"gpu": "0", "duration": "1h30m"}),
        ("return all", "all", {"gpu": "all"}),
        ("return 0", "0", {"gpu": "0"}),
    ],
)
def test_lending_commands_and_their_helper_fields(command, argument, fields):
    word = command.split(" ")[0]
    assert decide_command(command) == Decision(word, argument=argument)
    assert lending_request(word, argument) == fields


@pytest.mark.parametrize(
    "command",
    ["borrow", "borrow 0", "borrow 100", "borrow x", "borrow 1 8h 9h", "borrow 1 ../etc", "borrow 1 8h --yes",
     "borrow --wait", "borrow 1 h8", "borrow 1 8", "extend 3", "extend x 2h", "extend 3 2h --wait",
     "return", "return 1024", "return 3 4", "return -1", "return ALL", "borrow 1 8h\n", "borrow 1  8h"],
)  # fmt: skip
def test_lending_commands_refused_with_their_usage(command):
    decision = decide_command(command)
    assert decision.action is None
    assert decision.reason.startswith("usage: ")


def test_menu_lending_answers_are_held_to_the_same_grammar():
    assert decide_lending("borrow", ["1", "30m"]) == Decision("borrow", argument="1 30m")
    assert decide_lending("return", ["all"]) == Decision("return", argument="all")
    assert decide_lending("extend", ["1"]).action is None
