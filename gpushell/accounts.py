"""Host accounts of students: login shell gpushell, group gpushell, key login."""

from __future__ import annotations

import os
import pwd
import re

from . import rootfs
from .errors import GpushellError
from .model import Value
from .runner import run

# Options (unquoted characters or whole "quoted strings", the two never
# overlap, so matching stays linear on hostile input), then the key type
# and its base64 blob, then an optional comment.
KEY_LINE = re.compile(
    r'(?:(?:[^\s"]|"[^"]*")+\s+)?'
    r"(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp(?:256|384|521)|sk-[a-z0-9@.-]+)"
    r"\s+[A-Za-z0-9+/]+={0,3}(?:\s.*)?"
)


class HostAccount(Value):
    __slots__ = ("created", "name", "old_shell")

    def __init__(self, name: str, created: bool, old_shell: str = "") -> None:
        self.name = name
        self.created = created  # False: an existing account was adopted
        self.old_shell = old_shell


def validate_keys(text: str, source: str) -> str:
    """The key lines of an authorized_keys text; refuse anything that is not a key."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for number, line in enumerate(lines, 1):
        if not KEY_LINE.fullmatch(line):
            raise GpushellError(f"{source}: line {number} is not an SSH public key")
    return "".join(line + "\n" for line in lines)


def existing_keys(name: str) -> str:
    """The host account's authorized_keys, or '' (no account, no file)."""
    try:
        home = pwd.getpwnam(name).pw_dir
    except KeyError:
        return ""
    path = os.path.join(home, ".ssh", "authorized_keys")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, encoding="utf-8", errors="replace") as stream:
        return validate_keys(stream.read(), path)


def ensure_account(name: str, shell: str, group: str) -> HostAccount:
    """Create the host account, or adopt an existing non-system one."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        # -K ..._COUNT=0: no subordinate ids for the host account (its
        # container is root's); useradd would otherwise take 65536 of them
        # per student and run out once root's range covers the free space.
        run(
            [
                "useradd",
                "-K",
                "SUB_UID_COUNT=0",
                "-K",
                "SUB_GID_COUNT=0",
                "--create-home",
                "--shell",
                shell,
                "--groups",
                group,
                "--password",
                "*",
                "--comment",
                "gpushell student",
                name,
            ]
        )
        return HostAccount(name, created=True)
    if entry.pw_uid < 1000:
        raise GpushellError(f"{name} is a system account (uid {entry.pw_uid}); refusing to make it a student")
    run(["usermod", "--shell", shell, "--append", "--groups", group, name])
    return HostAccount(name, created=False, old_shell=entry.pw_shell)


def undo_account(account: HostAccount, group: str) -> None:
    if account.created:
        run(["userdel", "--remove", account.name], check=False)
    else:
        run(["usermod", "--shell", account.old_shell, account.name], check=False)
        run(["gpasswd", "--delete", account.name, group], check=False)


def install_host_keys(name: str, keys: str) -> None:
    """Write keys to the host account's authorized_keys without following its links."""
    entry = pwd.getpwnam(name)
    owner = (entry.pw_uid, entry.pw_gid)
    rootfs.make_dir(entry.pw_dir, ".ssh", 0o700, owner)
    rootfs.write_file(entry.pw_dir, ".ssh/authorized_keys", keys, 0o600, owner)


def remove_account(name: str) -> None:
    run(["userdel", "--remove", name])
