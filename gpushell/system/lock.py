"""Advisory file locks (flock) that serialize work on one user or the registry.

A lock is waited for at most `timeout` seconds when the caller says so:
a student's second action, or an admin's command on a student, then ends
with a clear "busy" message instead of hanging behind the first.
"""

from __future__ import annotations

import fcntl
import os
import time

from ..core.errors import GpushellError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Polling a held flock: start fast (most holders finish in milliseconds),
# back off to a few checks a second for a long holder.
FIRST_POLL = 0.005
LONGEST_POLL = 0.2


# How long gpushell-admin waits for a student's lock (a student's action may
# hold it until its own deadline): past it, one clear line, never a hang.
ADMIN_WAIT = 60.0


def admin_busy(name: str) -> str:
    return f"{name} is busy: an action of theirs is running; try again when it has finished"


class Busy(GpushellError):
    """The lock stayed held past the wait the caller allowed."""


class locked:  # lower case: used like a function, `with locked(path):`
    """Hold an exclusive flock on path (created 0600 if missing) for the block.

    The kernel drops the lock when the process dies, so a killed command
    never leaves a stale lock behind.  A class, not contextlib's decorator:
    contextlib stays off the login path.
    timeout None waits as long as it takes; a number raises Busy (with the
    `busy` message for the person at the keyboard) once it has passed.
    """

    def __init__(self, path: str, timeout: float | None = None, busy: str = "busy; try again later") -> None:
        self.path, self.fd = path, -1
        self.timeout, self.busy = timeout, busy

    def __enter__(self) -> None:
        self.fd = open_lock_file(self.path)
        try:
            if self.timeout is None:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            elif not wait_for(self.fd, self.timeout):
                raise Busy(self.busy, f"{self.path} still held after {self.timeout} s")
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)


def open_lock_file(path: str) -> int:
    """A descriptor to flock path by (created 0600, its directory too, if missing): never through
    a link, and never inherited by a program the holder runs."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def try_lock(fd: int) -> bool:
    """Take the flock on fd if it is free; False when someone holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def wait_for(fd: int, timeout: float) -> bool:
    """Take the flock on fd within timeout seconds; False when it stayed held."""
    return poll(lambda: try_lock(fd), timeout)


def poll(
    attempt: Callable[[], bool], timeout: float, first: float = FIRST_POLL, longest: float = LONGEST_POLL
) -> bool:
    """attempt() until it is True (True) or timeout seconds have passed (False), backing off
    from `first` to `longest` seconds between two tries."""
    deadline = time.monotonic() + timeout
    pause = first
    while not attempt():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, longest)
    return True
