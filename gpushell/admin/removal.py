"""Removing a student: `gpushell-admin remove`, and `expire` for each student whose grace has passed.

One way for both, in this order, under the registry lock and the student's lock:
stop the container; archive its files when asked (a failure there removes
nothing); drop the student's GPU loans and place in line from the book
(the stopped container holds no device any more); remove the forward; destroy
the container with its snapshots; write the registry without the entry.  Then
the isolation tables follow the registry, and with purge the host account goes.
"""

from __future__ import annotations

import datetime
import pwd

from ..containers import diskcount
from ..containers.factory import backend_for
from ..core import lending, registry_edit
from ..core.errors import ExitStatus, GpushellError
from ..core.model import Registry, User
from ..core.paths import Paths
from ..helper import services
from ..system import accounts, audit, loanstore, nftrun, registry_store
from ..system.lock import ADMIN_WAIT, admin_busy, locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Removed:
    """What a removal did: the entry it removed, the tarball kept (and of what), loans dropped, the
    account, isolation."""

    __slots__ = ("account_deleted", "isolated", "kept", "kept_as", "loans", "user")

    def __init__(
        self,
        user: User,
        kept: str,
        loans: int,
        account_deleted: bool,
        isolated: bool,
        kept_as: str,
    ) -> None:
        self.user, self.kept, self.kept_as, self.loans = user, kept, kept_as, loans
        self.account_deleted, self.isolated = account_deleted, isolated


def drop_loans(paths: Paths, name: str) -> int:
    """Take the student's loans and place in line out of the book; how many loans there were.

    The book is only read when it holds nothing of theirs (no state
    directory is made for a lab that never lent).
    """
    book = loanstore.read(paths)
    if not book.of(name) and book.place(name) is None:
        return 0

    def change(book: lending.LoanBook) -> tuple[lending.LoanBook, int]:
        kept, ended = lending.give_back(book, name, lending.ALL)
        return kept, len(ended)

    dropped = loanstore.update(paths, change)
    for loan in book.of(name):
        audit.record(name, "loan-dropped", "ok", f"gpu={loan.gpu} (student removed)")
    return dropped


def remove_student(
    paths: Paths,
    name: str,
    archive_dir: str | None,
    purge: bool,
    warn: Callable[[str], None],
    still_wanted: Callable[[Registry, User], None] | None = None,
) -> Removed:
    """Remove `name` entirely (see the module's docstring); raises before any change if they are unknown.

    still_wanted: asked with the registry as read under its lock, raises to
    refuse (so `expire` never removes a student whose expiry an admin moved
    since it looked).
    """
    with registry_store.Change(paths) as change:
        reg = change.old
        if name not in reg.users:
            raise GpushellError(
                f"{name} is not registered in {paths.registry}", status=ExitStatus.NOT_REGISTERED
            )
        user = reg.users[name]
        if still_wanted is not None:
            still_wanted(reg, user)
        new_reg = change.propose(registry_edit.remove_user(change.old_text, name))
        ctx = services.Context(paths, reg, backend_for(reg))
        with locked(paths.user_lock(name), ADMIN_WAIT, admin_busy(name)):
            ctx.driver.stop(user.container)
            kept = ""
            if archive_dir:
                # Before anything is destroyed; a failure here aborts the remove.
                now = datetime.datetime.now(datetime.UTC)
                kept = ctx.driver.archive(user.container, archive_dir, name, now)
            loans = drop_loans(paths, name)
            services.remove_forward(ctx, name)
            ctx.driver.destroy(reg, user.container)
            diskcount.forget(paths.disk_count(name))
            change.write()
        isolated = nftrun.after_change(new_reg, warn)
    deleted = False
    if purge and _has_account(name):
        accounts.remove_account(name)
        deleted = True
    return Removed(user, kept, loans, deleted, isolated, ctx.driver.ARCHIVED)


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
