"""The few signal calls the login path makes, without `signal`'s enums.

The standard `signal` module wraps its C core `_signal` in IntEnums, and
importing `enum` costs each process ~3.7 ms; a login starts two (the
shell and the root helper).  These are the same calls on plain ints.
"""

from __future__ import annotations

import _signal  # typeshed has no stub for it: the names below are typed here

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

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
