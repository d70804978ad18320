"""What the two login processes, the student's shell and the root helper, share.

A student waits for every login, and each login runs two Python processes
(the shell, then the helper through sudo), so this is the one path where
milliseconds are worth code.  What the two import at login stays lean:
no PyYAML, python-lxc, `subprocess`, `signal` (its IntEnums import `enum`),
`typing`, `re`, `json`, ... (tests/unit/test_login_imports.py lists them
and fails when one comes back).  So the modules on that path

- run programs through spawn.py (posix_spawn and select, not subprocess);
- name their types for mypy only, under `TYPE_CHECKING = False`;
- make their few signal calls through here, on plain ints.

Both processes end with `leave`: main() has returned, so its `with` blocks
and `finally` clauses have run; what is skipped is the interpreter's
teardown, which frees every module and object one at a time for memory
the kernel takes back at once anyway.  The atexit functions still run and
the standard streams are flushed first, so the answer is out before
anything else happens.  What it would lose is a file left open and
unflushed: gpushell closes every file it writes with `with`, or writes
through os.write.

Everywhere else (gpushell-admin, the driver hook) takes the plain way.
"""

from __future__ import annotations

import _signal  # typeshed has no stub for it: the names below are typed here
import atexit
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    Handler = Callable[[int, object], None] | int

SIGHUP: int = _signal.SIGHUP
SIGINT: int = _signal.SIGINT
SIGQUIT: int = _signal.SIGQUIT
SIGKILL: int = _signal.SIGKILL
SIGALRM: int = _signal.SIGALRM
SIGTERM: int = _signal.SIGTERM
SIGTSTP: int = _signal.SIGTSTP
SIG_IGN: int = _signal.SIG_IGN

NAMES = {SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGALRM: "SIGALRM",
         SIGTERM: "SIGTERM", SIGTSTP: "SIGTSTP"}  # fmt: skip


def handle(signum: int, handler: Handler) -> None:
    """Install handler (a function, or SIG_IGN) for signum."""
    _signal.signal(signum, handler)


def alarm(seconds: int) -> None:
    """SIGALRM after seconds (0: cancel the pending one)."""
    _signal.alarm(seconds)


def flush_streams() -> None:
    """Flush stdout and stderr, whatever state the terminal is in."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (not contextlib.suppress: contextlib stays off the login path)
            stream.flush()
        except (OSError, ValueError):  # a hung-up terminal, a closed stream
            pass


def leave(status: int | None) -> NoReturn:
    """Exit with main()'s status, as sys.exit would, minus the interpreter's teardown."""
    flush_streams()
    atexit._run_exitfuncs()
    flush_streams()
    os._exit(status or 0)
