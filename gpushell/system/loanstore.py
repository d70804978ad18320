"""The GPU loans' file: root's, private, kept across reboots, changed one writer at a time.

`Paths.loans` (`/var/lib/gpushell/loans.json`) holds the loan book as
lending.to_json writes it.  `read` gives the book (no file: no loans);
`update` takes the loans lock, reads, lets a pure change decide, and
writes the new book atomically and durably before it returns, so a helper
killed mid-change leaves the old book or the new one, never half of one,
and a loan made survives a power cut.  Two students asking for the last
free GPU at once are two updates, one after the other: the second sees
the first's loan.

The file and its directory must be root's and private (0600 in 0700): a
file that is a link, someone else's, writable by others, too large or
damaged is refused (GpushellError, one line for the log), never taken as
"no loans": that would hand out GPUs already lent.
"""

from __future__ import annotations

import os
import stat

from ..core import lending
from ..core.errors import ExitStatus, GpushellError
from ..core.lending import LoanBook
from ..core.paths import Paths
from .files import write_atomically
from .lock import locked
from .ownership import check_owned_by_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

MAX_SIZE = 4 * 2**20  # bytes: thousands of loans and waiters; past it the file is not ours
LOCK_WAIT = 10.0  # seconds: a change takes milliseconds; past this something hangs
BUSY = "GPU loans are busy right now; try again in a moment"


def _unsafe(path: str, why: str) -> GpushellError:
    return GpushellError(lending.UNAVAILABLE, f"{path}: {why}, refused", ExitStatus.CONFIG)


def read(paths: Paths) -> LoanBook:
    """The loan book in paths.loans; the empty book when there is no file yet."""
    path = paths.loans
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return lending.EMPTY
    except OSError as exc:  # a link (ELOOP), no permission, ...
        raise _unsafe(path, f"cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _unsafe(path, "is not a plain file")
        if info.st_uid != 0 or info.st_mode & 0o077:
            raise _unsafe(path, "is not root's alone (owner root, mode 0600)")
        data = stream.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise _unsafe(path, f"is larger than {MAX_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _unsafe(path, "is not UTF-8 text") from None
    return lending.from_json(text, path)


def update(paths: Paths, change: Callable[[LoanBook], tuple[LoanBook, T]], timeout: float = LOCK_WAIT) -> T:
    """Apply `change` to the book under the loans lock; write its new book if it differs; return its answer.

    A change that raises leaves the file as it was (and the error goes up).
    Busy (lock.Busy) when another change holds the lock past `timeout`.
    """
    _ensure_directory(paths.state_dir)
    with locked(paths.loans_lock, timeout, BUSY):
        book = read(paths)
        new, answer = change(book)
        if new != book:
            write_atomically(paths.loans, lending.to_json(new), 0o600, durable=True)
        return answer


def _ensure_directory(directory: str) -> None:
    """The state directory, made root's and 0700 when missing; refused when someone else could write it."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
        os.mkdir(directory, 0o700)
    try:
        check_owned_by_root(directory)
    except GpushellError as exc:  # the student hears only that loans are unavailable
        raise GpushellError(lending.UNAVAILABLE, exc.log_message, ExitStatus.CONFIG) from None
    if os.lstat(directory).st_mode & 0o077:
        raise _unsafe(directory, "is open to others (mode must be 0700)")
