"""`gpushell-admin expire`: remove the students whose account expired longer than expire_grace ago.

The plan is a pure function of the registry and a time (`plan`); the removal
of each student is remove's own (removal.py, with --purge: account,
container, snapshots, forward, isolation rules), plus their GPU loans.
`list` and `doctor` read the same plan for what they show.
"""

from __future__ import annotations

import time

from ..containers.factory import archived_as
from ..core import expiry
from ..core.durations import duration_text
from ..core.errors import ExitStatus, GpushellError
from ..core.model import Registry, User
from ..core.paths import Paths
from ..core.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .cli import Options
    from .removal import Removed

    Say = Callable[[str], None]


def now() -> float:
    return time.time()


class Expired(Value):
    """A student whose account has expired: the day, when `expire` may remove them, and whether it may now."""

    __slots__ = ("due", "expires", "name", "removable")

    def __init__(self, name: str, expires: expiry.Day, removable: float, due: bool) -> None:
        self.name, self.expires, self.removable, self.due = name, expires, removable, due


def due(user: User, grace: int, at: float) -> bool:
    """Whether `expire` may remove the student at `at`: expired, and the grace period over."""
    return user.expires is not None and at >= expiry.removable_from(user.expires, grace)


def plan(reg: Registry, at: float) -> list[Expired]:
    """Every expired student (by name), with when their grace ends and whether it has (local time)."""
    today = expiry.today(at)
    found = []
    for user in sorted(reg.users.values(), key=lambda user: user.name):
        if user.expires is not None and expiry.is_expired(user.expires, today):
            removable = expiry.removable_from(user.expires, reg.expire_grace)
            found.append(Expired(user.name, user.expires, removable, at >= removable))
    return found


def upcoming(reg: Registry, at: float, days: int = expiry.WARN_DAYS) -> list[tuple[str, expiry.Day, int]]:
    """(name, day, days left) of each student whose account expires within `days` days, soonest first."""
    today = expiry.today(at)
    soon = [
        (user.name, user.expires, expiry.days_left(user.expires, today))
        for user in reg.users.values()
        if user.expires is not None and 0 < expiry.days_left(user.expires, today) <= days
    ]
    return sorted(soon, key=lambda item: (item[2], item[0]))


def when(seconds: float) -> str:
    """A moment as the admin reads it: local `2025-07-30 00:00`."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def grace_text(reg: Registry) -> str:
    return f"expire_grace {duration_text(reg.expire_grace)}" if reg.expire_grace else "expire_grace 0"


def waiting_line(item: Expired, reg: Registry) -> str:
    return (
        f"kept {item.name}: expired on {expiry.day_text(item.expires)}, "
        f"removed from {when(item.removable)} ({grace_text(reg)})"
    )


def dry_run_line(item: Expired, reg: Registry, loans: int | None, archive_dir: str | None) -> str:
    user = reg.users[item.name]
    what = [f"container {user.container} and its snapshots", f"the forward of port {user.port}"]
    what.append("host account")
    if loans is None:
        what.append("any GPU loans (the loan book could not be read)")
    elif loans:
        what.append(f"{loans} GPU loan{'' if loans == 1 else 's'}")
    archived = f"; its {archived_as(reg)} archived to {archive_dir} first" if archive_dir else ""
    return (
        f"would remove {item.name} (expired on {expiry.day_text(item.expires)}, grace ended "
        f"{when(item.removable)}): {', '.join(what)}{archived}"
    )


def still_due(reg: Registry, user: User) -> None:
    """Refuse the removal of a student who is no longer due (their expiry moved since the plan was made)."""
    if not due(user, reg.expire_grace, now()):
        raise GpushellError(f"{user.name} is no longer past their expiry and grace period; nothing changed")


def cmd_expire(paths: Paths, args: Options, say: Say) -> int:
    from ..system import loanstore, registry_store
    from . import removal

    at = now()
    reg = registry_store.load(paths)
    found = plan(reg, at)
    if not found:
        say("no student's account has expired")
        return ExitStatus.OK
    failures = 0
    for item in found:
        if not item.due:
            say(waiting_line(item, reg))
            continue
        if args.dry_run:
            try:
                book = loanstore.read(paths)
                loans: int | None = len(book.of(item.name))
            except GpushellError:
                loans = None
            say(dry_run_line(item, reg, loans, args.archive))
            continue
        try:
            done = removal.remove_student(paths, item.name, args.archive, True, _warn, still_due)
        except GpushellError as exc:
            failures += 1
            _warn(f"{item.name} not removed: {exc.user_message}")
            continue
        say(removed_line(item, done))
        if not done.isolated:
            failures += 1
    return ExitStatus.ERROR if failures else ExitStatus.OK


def removed_line(item: Expired, done: Removed) -> str:
    user = done.user
    parts = [f"container {user.container} destroyed", f"port {user.port} freed"]
    parts.append("host account deleted" if done.account_deleted else "no host account to delete")
    if done.loans:
        parts.append(f"{done.loans} GPU loan{'' if done.loans == 1 else 's'} dropped")
    kept = f"; {done.kept_as} kept in {done.kept}" if done.kept else ""
    return f"removed {item.name} (expired on {expiry.day_text(item.expires)}): {', '.join(parts)}{kept}"


def _warn(line: str) -> None:
    import sys

    sys.stderr.write(f"gpushell-admin: {line}\n")
