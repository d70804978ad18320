"""What a student may ask for (pure decisions, like lshell's policy).

Both the interactive menu and `ssh host WORD` (which reaches the shell as
`-c WORD`) go through here.  Nothing a student types ever reaches a shell
or a path: a request is one of a fixed set of words, or it is refused.
"""

from __future__ import annotations

# (word, what it does); the menu numbers them in this order.
MENU: tuple[tuple[str, str], ...] = (
    ("status", "your container's state, CPU, memory and disk use"),
    ("start", "start your container"),
    ("stop", "stop your container"),
    ("restart", "restart your container"),
    ("gpus", "the GPUs, who uses them; end your GPU processes"),
    ("snapshot", "save a snapshot of your container"),
    ("snapshots", "list your snapshots"),
    ("restore", "put a snapshot back (replaces your container's files)"),
    ("delete-snapshot", "delete one of your snapshots"),
    ("rebuild", "a fresh container from the current template"),
    ("keys", "locked out? re-copy your ssh keys, repair sshd"),
    ("borrow", "borrow free GPUs for a while"),
    ("extend", "keep a borrowed GPU longer"),
    ("return", "give borrowed GPUs back"),
    ("help", "how to connect, copy files and reach Jupyter"),
    ("quit", "log out"),
)
MENU_WORDS = tuple(word for word, _ in MENU)
KILL_COMMAND = "kill-gpu-process"
# Words that take no argument through `ssh HOST WORD`.
REMOTE_WORDS = ("status", "start", "stop", "restart", "gpus", "snapshots", "keys", "help")
# GPU lending's words: offered where the registry has a `lending:` mapping.
LENDING_WORDS = ("borrow", "extend", "return")
WAIT = "--wait"
ALL_GPUS = "all"
MAX_GPU_DIGITS = 4  # GPU numbers are below 1024, as in the registry
MAX_DURATION_TEXT = 16
# What an admin may turn off for a lab (`disabled_actions:` in the registry).
DISABLEABLE = (
    "stop", "restart", "gpus", KILL_COMMAND, "snapshot", "snapshots", "restore", "delete-snapshot",
    "rebuild", "keys",
)  # fmt: skip
# The root helper's verbs, one per sudoers line: what the login shell may ask
# of root, and nothing else (helper.ACTIONS implements exactly these).
HELPER_VERBS = (
    "login", "status", "help", "start", "stop", "restart", "gpus", "gpu-kill", "snapshot", "snapshots",
    "restore", "delete-snapshot", "rebuild", "keys", *LENDING_WORDS,
)  # fmt: skip
# These replace or delete a student's files: the menu asks for their user
# name typed out, `-c` wants the word YES.
DESTRUCTIVE = ("restore", "delete-snapshot", "rebuild")
YES = "--yes"
WIPE_HOME = "--wipe-home"
SNAPSHOT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
MAX_SNAPSHOT_NAME = 32
SNAPSHOT_NAME_RULE = "a snapshot name is 1-32 of a-z, 0-9, - and _, starting with a letter or digit"
MAX_PID_DIGITS = 7
MAX_COMMAND = 64
# The whole `-c` grammar, for the refusal message.
GRAMMAR = (
    "status, start, stop, restart, gpus, snapshots, keys, help, snapshot [NAME], "
    "restore NAME --yes, delete-snapshot NAME --yes, rebuild [--wipe-home] --yes, "
    f"{KILL_COMMAND} PID, borrow N [DURATION] [{WAIT}], extend GPU DURATION, return GPU|{ALL_GPUS}"
)


class Decision:
    """An allowed action, or None and the reason to show."""

    __slots__ = ("action", "argument", "reason")

    def __init__(self, action: str | None, reason: str = "", argument: str = "") -> None:
        self.action, self.reason, self.argument = action, reason, argument

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and (self.action, self.reason, self.argument) == (
            other.action,
            other.reason,
            other.argument,
        )

    def __hash__(self) -> int:
        return hash((self.action, self.reason, self.argument))

    def __repr__(self) -> str:
        extra = f", argument={self.argument!r}" if self.argument else ""
        return f"Decision({self.action!r}, {self.reason!r}{extra})"

    @property
    def allowed(self) -> bool:
        return self.action is not None


def decide_command(command: str) -> Decision:
    """Decide a `-c` command string: one allowed word and its strictly checked arguments.

    Arguments are split on single spaces and each must be exactly what its
    place allows (a snapshot name, a PID, `--yes`), so no text a student
    chooses ever reaches a shell, and a name can never be a path.
    """
    if command in REMOTE_WORDS:
        return Decision(command)
    words = command.split(" ")
    word, arguments = words[0], words[1:]
    if word == KILL_COMMAND and arguments:
        if len(arguments) == 1 and is_pid(arguments[0]):
            return Decision(KILL_COMMAND, argument=arguments[0])
        return Decision(None, f"usage: {KILL_COMMAND} PID (a process number that `gpus` shows as yours)")
    if word == "snapshot":
        return _decide_snapshot(arguments)
    if word in ("restore", "delete-snapshot"):
        return _decide_named_destructive(word, arguments)
    if word == "rebuild":
        return _decide_rebuild(arguments)
    if word in LENDING_WORDS:
        return decide_lending(word, arguments)
    if not command.strip():
        return Decision(None, "an empty command is not allowed")
    shown = command if len(command) <= MAX_COMMAND and command.isprintable() else repr(command[:MAX_COMMAND])
    if "sftp-server" in command or command.startswith(("scp ", "rsync ", "internal-sftp")):
        return Decision(
            None,
            f"file transfer to this host is not allowed ({shown}); "
            "copy files to your container's port instead",
        )
    return Decision(None, f"{shown}: not allowed here (allowed commands: {GRAMMAR})")


def _decide_snapshot(arguments: list[str]) -> Decision:
    if not arguments:
        return Decision("snapshot")
    if len(arguments) == 1 and is_snapshot_name(arguments[0]):
        return Decision("snapshot", argument=arguments[0])
    return Decision(None, f"usage: snapshot [NAME]; {SNAPSHOT_NAME_RULE}")


def _decide_named_destructive(word: str, arguments: list[str]) -> Decision:
    usage = f"usage: {word} NAME {YES} (NAME as `snapshots` lists it)"
    if not arguments or len(arguments) > 2 or not is_snapshot_name(arguments[0]):
        return Decision(None, f"{usage}; {SNAPSHOT_NAME_RULE}" if arguments else usage)
    if arguments[1:] != [YES]:
        what = "replaces everything in your container with" if word == "restore" else "deletes"
        return Decision(
            None, f"{word} {what} snapshot {arguments[0]}; to confirm: {word} {arguments[0]} {YES}"
        )
    return Decision(word, argument=arguments[0])


def _decide_rebuild(arguments: list[str]) -> Decision:
    if arguments in ([YES], [WIPE_HOME, YES]):
        return Decision("rebuild", argument=WIPE_HOME if WIPE_HOME in arguments else "")
    if arguments in ([], [WIPE_HOME]):
        keeps = "deletes your home directory too" if arguments else "keeps your home directory"
        confirmed = " ".join(["rebuild", *arguments, YES])
        return Decision(
            None, f"rebuild replaces your container with a fresh one and {keeps}; to confirm: {confirmed}"
        )
    return Decision(None, f"usage: rebuild [{WIPE_HOME}] {YES}")


LENDING_USAGE = {
    "borrow": f"usage: borrow N [DURATION] [{WAIT}] (N GPUs, DURATION like 30m, 8h or 2d)",
    "extend": "usage: extend GPU DURATION (GPU as `gpus` shows your loan, DURATION like 2h)",
    "return": f"usage: return GPU|{ALL_GPUS}",
}


def decide_lending(word: str, arguments: list[str]) -> Decision:
    """borrow N [DURATION] [--wait], extend GPU DURATION, return GPU|all; the argument is the
    checked words joined by one space (lending_request turns it into the helper's fields).

    A duration here is only shaped like one (digits and d/h/m/s, bounded);
    the helper parses it and holds it to the lab's limits.
    """
    wait = word == "borrow" and arguments[-1:] == [WAIT]
    words = arguments[:-1] if wait else arguments
    if word == "borrow":
        shaped = 1 <= len(words) <= 2 and _is_count(words[0]) and all(map(_is_duration, words[1:]))
    elif word == "extend":
        shaped = len(words) == 2 and _is_gpu(words[0]) and _is_duration(words[1])
    else:
        shaped = len(words) == 1 and (words[0] == ALL_GPUS or _is_gpu(words[0]))
    if not shaped:
        return Decision(None, LENDING_USAGE[word])
    return Decision(word, argument=" ".join(arguments))


def lending_request(word: str, argument: str) -> dict[str, str]:
    """The helper's `key=value` fields for a lending word decide_lending allowed."""
    words = argument.split(" ")
    if word == "borrow":
        fields = {"count": words[0], "wait": "1" if WAIT in words else ""}
        durations = [w for w in words[1:] if w != WAIT]
        return {**fields, "duration": durations[0]} if durations else fields
    if word == "extend":
        return {"gpu": words[0], "duration": words[1]}
    return {"gpu": words[0]}


def _is_count(text: str) -> bool:
    """How many GPUs to borrow: 1-99."""
    return text.isascii() and text.isdigit() and len(text) <= 2 and int(text) > 0


def _is_gpu(text: str) -> bool:
    """A GPU's number, as in /dev/nvidiaN: 0-1023."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_GPU_DIGITS and int(text) < 1024


def _is_duration(text: str) -> bool:
    return (
        0 < len(text) <= MAX_DURATION_TEXT
        and text.isascii()
        and text[0].isdigit()
        and text[-1] in "dhms"
        and all(ch.isdigit() or ch in "dhms" for ch in text)
    )


def is_snapshot_name(text: str) -> bool:
    """^[a-z0-9][a-z0-9_-]{0,31}$, written out: never a path."""
    return (
        0 < len(text) <= MAX_SNAPSHOT_NAME
        and text.isascii()
        and text[0].isalnum()
        and all(ch in SNAPSHOT_NAME_CHARS for ch in text)
    )


def confirms(line: str, user: str) -> bool:
    """The menu's typed confirmation: exactly the student's own user name."""
    return line.strip() == user


def decide_snapshot_pick(line: str, names: list[str]) -> str | None:
    """A snapshot chosen from a listed menu by its number (1..) or its name; None otherwise."""
    choice = line.strip()
    if choice.isascii() and choice.isdigit() and len(choice) <= 3 and 1 <= int(choice) <= len(names):
        return names[int(choice) - 1]
    return choice if choice in names else None


def is_pid(text: str) -> bool:
    """^[0-9]{1,7}$ and not zero."""
    return text.isascii() and text.isdigit() and 1 <= len(text) <= MAX_PID_DIGITS and int(text) > 0


def decide_kill_choice(line: str, own: int) -> int | None:
    """After `gpus`: the number (1..own) of one of the student's own processes, or None."""
    choice = line.strip()
    if choice.isascii() and choice.isdigit() and len(choice) <= MAX_PID_DIGITS and 1 <= int(choice) <= own:
        return int(choice)
    return None


def offered(disabled: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    """The menu's rows, less what the admin turned off for this lab."""
    return tuple((word, what) for word, what in MENU if word not in disabled)


def decide_choice(line: str, disabled: tuple[str, ...] = ()) -> Decision:
    """Decide a menu line: a number or a word from the menu, surrounding blanks ignored."""
    rows = offered(disabled)
    words = tuple(word for word, _ in rows)
    choice = line.strip().lower()
    if choice.isascii() and choice.isdigit() and len(choice) <= 3 and 1 <= int(choice) <= len(rows):
        return Decision(words[int(choice) - 1])
    if choice in words:
        return Decision(choice)
    if choice in ("exit", "logout", "q"):
        return Decision("quit")
    if choice in MENU_WORDS:
        return Decision(None, f"{choice} is turned off on this host")
    return Decision(None, f"please choose 1-{len(rows)} or one of: {', '.join(words)}")
