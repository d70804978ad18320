"""What an interrupted `gpushell-admin add` (or template build) can leave behind.

`add` writes a journal, `LXCPATH/.gpushell-add-NAME`, before its first
change and deletes it after the registry entry is written.  A journal whose
user is not registered is the mark of an add that died half-way: its host
account (if that add created it, or the shell and group it gave an adopted
one), its container and its staging directories are leftovers that `apply`
undoes.  Without a journal nothing is deleted: an unregistered container
directory is only reported, since it may hold someone's work.

`find` is pure; `scan` reads the host; `remove` undoes one leftover.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import stat

from ..core.errors import GpushellError
from ..core.model import Registry
from ..core.paths import Paths
from ..core.value import Value
from ..system.files import read_private
from ..system.runner import run

JOURNAL_PREFIX = ".gpushell-add-"
MAX_JOURNAL = 4096
# A copy's staging directory: tempfile.mkdtemp(prefix=".NAME-") adds 8 characters
# from [a-z0-9_], NAME a container's name.
STAGING = re.compile(r"\.([A-Za-z0-9][A-Za-z0-9_.-]{0,62})-[a-z0-9_]{8}")
TEMPLATE_MARK = "# gpushell template"
MIN_STUDENT_UID = 1000

# What `remove` does with a leftover.
RMTREE, UNLINK, USERDEL, RESTORE_ACCOUNT, REPORT = "rmtree", "unlink", "userdel", "restore-account", ""


class Journal(Value):
    """What an add in progress noted before its first change."""

    __slots__ = ("account_existed", "container", "old_shell", "user")

    def __init__(self, user: str, container: str, account_existed: bool, old_shell: str = "") -> None:
        self.user, self.container = user, container
        self.account_existed, self.old_shell = account_existed, old_shell

    def dumps(self) -> str:
        import json  # journals exist only while an add runs, or after one failed: rarely read

        return json.dumps({name: getattr(self, name) for name in self.__slots__}, sort_keys=True) + "\n"


def parse_journal(text: str) -> Journal | None:
    import json

    try:
        data = json.loads(text)
        journal = Journal(
            str(data["user"]), str(data["container"]), bool(data["account_existed"]), str(data["old_shell"])
        )
    except (ValueError, KeyError, TypeError):
        return None
    return journal


class HostAccountInfo(Value):
    __slots__ = ("in_group", "shell", "uid")

    def __init__(self, uid: int, shell: str, in_group: bool) -> None:
        self.uid, self.shell, self.in_group = uid, shell, in_group


class Scan(Value):
    """The lxcpath's entries and the students' group, as read from the host."""

    __slots__ = ("accounts", "entries", "group_members", "journals", "templates")

    def __init__(
        self,
        entries: dict[str, str],  # name in lxcpath -> "dir", "file" or "other" (a link, a socket...)
        templates: frozenset[str],  # directories whose config marks them as gpushell templates
        journals: dict[str, Journal | None],  # journal file name -> its content (None: unreadable)
        group_members: frozenset[str],
        accounts: dict[str, HostAccountInfo | None],  # for journals' users
    ) -> None:
        self.entries, self.templates, self.journals = entries, templates, journals
        self.group_members, self.accounts = group_members, accounts


class Leftover(Value):
    __slots__ = ("action", "fix", "old_shell", "subject", "what")

    def __init__(self, subject: str, what: str, action: str, fix: str = "", old_shell: str = "") -> None:
        self.subject = subject  # a path directly in the lxcpath, or a user name
        self.what = what
        self.action = action  # RMTREE, UNLINK, USERDEL, RESTORE_ACCOUNT; REPORT: only reported
        self.fix = fix  # for REPORT: what the administrator can do
        self.old_shell = old_shell  # for RESTORE_ACCOUNT


def journal_path(lxcpath: str, user: str) -> str:
    return os.path.join(lxcpath, f"{JOURNAL_PREFIX}{user}")


def find(reg: Registry, paths: Paths, scan: Scan) -> list[Leftover]:
    """Every leftover, pure: decided from the registry and what `scan` read."""
    found: list[Leftover] = []
    containers = {user.container for user in reg.users.values()}
    interrupted: dict[str, Journal] = {}
    journals: list[Leftover] = []  # last: while one is there, what it explains can be undone
    for entry, journal in sorted(scan.journals.items()):
        path = os.path.join(reg.lxcpath, entry)
        if journal is None:
            found.append(Leftover(path, f"unreadable add journal {path}", REPORT, f"read it, then rm {path}"))
            continue
        if journal.user not in reg.users:
            interrupted[journal.container] = journal
            found.extend(_account_leftovers(journal, paths, scan))
        journals.append(Leftover(path, f"journal of an interrupted add of {journal.user}: {path}", UNLINK))
    for entry, kind in sorted(scan.entries.items()):
        path = os.path.join(reg.lxcpath, entry)
        if entry.startswith(JOURNAL_PREFIX):
            continue
        if STAGING.fullmatch(entry):
            if kind == "dir":
                found.append(Leftover(path, f"staging directory of an interrupted copy: {path}", RMTREE))
            continue
        if entry.startswith(".") or entry in containers or entry == reg.template or entry in scan.templates:
            continue
        if kind == "dir" and entry in interrupted:
            found.append(
                Leftover(
                    path, f"container of an interrupted add of {interrupted[entry].user}: {path}", RMTREE
                )
            )
        elif kind == "dir":
            found.append(
                Leftover(
                    path,
                    f"container directory {path} belongs to no registered student",
                    REPORT,
                    f"keep a copy (tar --numeric-owner -C {path} -cf SOMEWHERE.tar .) and rm -rf {path}, "
                    "or register its student again",
                )
            )
    return found + journals


def _account_leftovers(journal: Journal, paths: Paths, scan: Scan) -> list[Leftover]:
    account = scan.accounts.get(journal.user)
    if account is None or account.uid < MIN_STUDENT_UID:
        return []
    if not journal.account_existed:
        return [
            Leftover(
                journal.user,
                f"host account {journal.user} made by an interrupted add has no registry entry",
                USERDEL,
            )
        ]
    if account.in_group or account.shell == paths.shell:
        return [
            Leftover(
                journal.user,
                f"host account {journal.user} was given shell {paths.shell} and group {paths.group} "
                "by an interrupted add",
                RESTORE_ACCOUNT,
                old_shell=journal.old_shell,
            )
        ]
    return []


def unregistered_members(reg: Registry, scan: Scan) -> list[str]:
    """Accounts in the students' group without an entry (remove keeps them unless --purge)."""
    interrupted = {j.user for j in scan.journals.values() if j is not None}
    return sorted(scan.group_members - set(reg.users) - interrupted)


# --- reading the host ----------------------------------------------------------


def _kind(path: str) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "gone"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _is_template(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "config"), encoding="utf-8", errors="replace") as stream:
            return stream.readline().startswith(TEMPLATE_MARK)
    except OSError:
        return False


def read_journal(path: str) -> Journal | None:
    text = read_private(path, MAX_JOURNAL)
    return None if text is None else parse_journal(text)


def scan(reg: Registry, paths: Paths) -> Scan:
    try:
        names = os.listdir(reg.lxcpath)
    except FileNotFoundError:
        names = []
    entries = {name: _kind(os.path.join(reg.lxcpath, name)) for name in names}
    templates = frozenset(
        name
        for name, kind in entries.items()
        if kind == "dir" and _is_template(os.path.join(reg.lxcpath, name))
    )
    journals = {
        name: read_journal(os.path.join(reg.lxcpath, name))
        for name, kind in entries.items()
        if name.startswith(JOURNAL_PREFIX) and kind == "file"
    }
    try:
        members = frozenset(grp.getgrnam(paths.group).gr_mem)
    except KeyError:
        members = frozenset()
    accounts: dict[str, HostAccountInfo | None] = {}
    for journal in journals.values():
        if journal is not None:
            try:
                entry = pwd.getpwnam(journal.user)
                in_group = journal.user in members
                accounts[journal.user] = HostAccountInfo(entry.pw_uid, entry.pw_shell, in_group)
            except KeyError:
                accounts[journal.user] = None
    return Scan(entries, templates, journals, members, accounts)


# --- undoing -----------------------------------------------------------------------


def remove(leftover: Leftover, reg: Registry, paths: Paths) -> None:
    """Undo one leftover, checking again that it is still one (call under the registry lock)."""
    fresh = {(item.subject, item.action) for item in find(reg, paths, scan(reg, paths))}
    if (leftover.subject, leftover.action) not in fresh:
        return  # gone meanwhile, or no longer a leftover
    if leftover.action in (RMTREE, UNLINK):
        path = leftover.subject
        if os.path.dirname(path) != os.path.normpath(reg.lxcpath):
            raise GpushellError(f"refusing to delete {path}: not directly in {reg.lxcpath}")
        if leftover.action == RMTREE:
            # lstat said dir: never a link; nor does removal follow one inside.  Through the
            # storage: on btrfs an interrupted add leaves subvolumes there.
            from ..containers import storage

            storage.for_registry(reg).remove(path)
        else:
            os.unlink(path)
    elif leftover.action == USERDEL:
        run(["userdel", "--remove", leftover.subject])
    elif leftover.action == RESTORE_ACCOUNT:
        if leftover.old_shell:
            run(["usermod", "--shell", leftover.old_shell, leftover.subject])
        run(["gpasswd", "--delete", leftover.subject, paths.group], check=False)
    else:
        raise GpushellError(f"{leftover.what}: not removed automatically; {leftover.fix}")


def journal_now(user: str, container: str) -> Journal:
    """The journal an add writes before its first change: did the account exist, with which shell."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return Journal(user, container, account_existed=False)
    return Journal(user, container, account_existed=True, old_shell=entry.pw_shell)


def forget(path: str) -> None:
    """Delete a journal (the add it describes finished, or was undone)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
