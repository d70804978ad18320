"""What a student may ask for (pure decisions, like lshell's policy).

Both the interactive menu and `ssh host WORD` (which reaches the shell as
`-c WORD`) go through here.  Nothing a student types ever reaches a shell
or a path: a request is one of a fixed set of words, or it is refused.
"""

from __future__ import annotations

# (word, what it does); the menu numbers them in this order.
MENU: tuple[tuple[str, str], ...] = (
    ("status", "show your container's state and how to reach it"),
    ("start", "start your container"),
    ("stop", "stop your container"),
    ("restart", "restart your container"),
    ("gpus", "the GPUs, who uses them; end your GPU processes"),
    ("help", "how to connect and copy files"),
    ("quit", "log out"),
)
MENU_WORDS = tuple(word for word, _ in MENU)
REMOTE_WORDS = ("status", "start", "stop", "restart", "gpus", "help")
# `kill-gpu-process PID`: the one command that takes an argument, a PID that
# `gpus` showed as yours.  Validated here; the helper checks it again as root.
KILL_COMMAND = "kill-gpu-process"
MAX_PID_DIGITS = 7
MAX_COMMAND = 64


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
    """Decide a `-c` command string: exactly one allowed word, nothing else."""
    if command in REMOTE_WORDS:
        return Decision(command)
    word, space, pid = command.partition(" ")
    if word == KILL_COMMAND and space:
        if is_pid(pid):
            return Decision(KILL_COMMAND, argument=pid)
        return Decision(None, f"usage: {KILL_COMMAND} PID (a process number that `gpus` shows as yours)")
    if not command.strip():
        return Decision(None, "an empty command is not allowed")
    shown = command if len(command) <= MAX_COMMAND and command.isprintable() else repr(command[:MAX_COMMAND])
    if "sftp-server" in command or command.startswith(("scp ", "rsync ", "internal-sftp")):
        return Decision(
            None,
            f"file transfer to this host is not allowed ({shown}); "
            "copy files to your container's port instead",
        )
    return Decision(None, f"{shown}: not allowed here (allowed commands: {', '.join(REMOTE_WORDS)})")


def is_pid(text: str) -> bool:
    """^[0-9]{1,7}$ and not zero, without `re` (kept off the login path)."""
    return text.isascii() and text.isdigit() and 1 <= len(text) <= MAX_PID_DIGITS and int(text) > 0


def decide_kill_choice(line: str, own: int) -> int | None:
    """After `gpus`: the number (1..own) of one of the student's own processes, or None."""
    choice = line.strip()
    if choice.isascii() and choice.isdigit() and len(choice) <= MAX_PID_DIGITS and 1 <= int(choice) <= own:
        return int(choice)
    return None


def decide_choice(line: str) -> Decision:
    """Decide a menu line: a number or a word from the menu, surrounding blanks ignored."""
    choice = line.strip().lower()
    if choice.isascii() and choice.isdigit() and 1 <= int(choice) <= len(MENU):
        return Decision(MENU_WORDS[int(choice) - 1])
    if choice in MENU_WORDS:
        return Decision(choice)
    if choice in ("exit", "logout", "q"):
        return Decision("quit")
    return Decision(None, f"please choose 1-{len(MENU)} or one of: {', '.join(MENU_WORDS)}")
