"""Host accounts of students: login shell gpushell, group gpushell, key login."""

from __future__ import annotations

import os
import pwd
import re
import stat

from ..core.errors import GpushellError
from ..core.value import Value
from . import rootfs
from .files import write_atomically
from .runner import run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import User

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


MAX_AUTHORIZED_KEYS = 256 * 1024
SHOWN_KEYS_PATH = "~/.ssh/authorized_keys"  # what a student reads: never the host path


def existing_keys(name: str) -> str:
    """The host account's authorized_keys, or '' (no account, no file).

    The student owns their home: .ssh and the file may be links or FIFOs.
    Each component under the home is opened without following a link, the
    file without blocking (a FIFO would wait for a writer forever), and it
    is read only when it is a regular file of bounded size.
    """
    try:
        home = pwd.getpwnam(name).pw_dir
    except KeyError:
        return ""
    text = read_bounded_under(home, (".ssh", "authorized_keys"), MAX_AUTHORIZED_KEYS)
    if text is None:
        return ""
    return validate_keys(text.decode("utf-8", errors="replace"), SHOWN_KEYS_PATH)


def read_bounded_under(top: str, parts: tuple[str, ...], limit: int) -> bytes | None:
    """top/parts... read with no link followed below top; None when absent or not a regular file.

    GpushellError when it is larger than limit (a file that big is no key list).
    """
    try:
        fd = _open_under(top, parts)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = _read_up_to(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise GpushellError(
            f"{SHOWN_KEYS_PATH} is too large (over {limit // 1024} KiB)",
            f"{top}/{'/'.join(parts)} is over {limit} bytes: not read",
        )
    return data


def _open_under(top: str, parts: tuple[str, ...]) -> int:
    """An fd of top/parts..., each part opened relative to the last without following a link."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        try:
            next_fd = os.open(part, flags if last else flags | os.O_DIRECTORY, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
    return fd


def _read_up_to(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


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


def student_ids(user: User) -> tuple[int, int] | None:
    """The host account's uid and gid, for a user with mounts (see lxcconfig.id_map_lines).

    Also gives root those two ids in /etc/subuid and /etc/subgid, which
    LXC's newuidmap needs to map them.
    """
    if not user.mounts:
        return None
    try:
        entry = pwd.getpwnam(user.name)
    except KeyError:
        return None
    ensure_student_ids(entry.pw_uid, entry.pw_gid)
    return entry.pw_uid, entry.pw_gid


def ensure_student_ids(uid: int, gid: int) -> bool:
    """root:UID:1 in /etc/subuid and root:GID:1 in /etc/subgid; True when a line was added.

    A container whose student id maps to the host account (lxcconfig.id_map_lines)
    is started through newuidmap/newgidmap, which allow root only the ids
    these files give it.
    """
    added = False
    for path, value in (("/etc/subuid", uid), ("/etc/subgid", gid)):
        try:
            with open(path, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
        except FileNotFoundError:
            lines = []
        if any(covers_subid(line, value) for line in lines):
            continue
        lines.append(f"root:{value}:1")
        write_atomically(path, "\n".join(lines) + "\n")
        added = True
    return added


def covers_subid(line: str, start: int) -> bool:
    parts = line.split(":")
    return (
        len(parts) == 3
        and parts[0] == "root"
        and parts[1].isdigit()
        and int(parts[1]) <= start < int(parts[1]) + int(parts[2] or 0)
    )
