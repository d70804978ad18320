"""Leaving a short-lived process without the interpreter's teardown.

A login runs two Python processes, the shell and the root helper, and the
student waits for the helper to end (the shell reads its pipes to EOF).
Python's own exit then frees every module and object one at a time, ~1.5
ms a process here (~6 ms for `gpushell-admin apply` with a thousand
students), for memory the kernel takes back at once anyway.  When main()
has returned, its `with` blocks and `finally` clauses have run, so only
that teardown is skipped: the atexit functions still run (the GPU
snapshot's background refresh starts from one), and the standard streams
are flushed first, so the answer is out before anything else happens.
What it would lose is a file left open and unflushed: gpushell closes
every file it writes with `with`, or writes through os.write.
"""

from __future__ import annotations

import atexit
import os
import sys

TYPE_CHECKING = False  # `typing` stays off the login path
if TYPE_CHECKING:
    from typing import NoReturn


def flush_streams() -> None:
    """Flush stdout and stderr, whatever state the terminal is in."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib would cost the login an import)
            stream.flush()
        except (OSError, ValueError):  # a hung-up terminal, a closed stream
            pass


def leave(status: int | None) -> NoReturn:
    """Exit with main()'s status, as sys.exit would, minus the teardown."""
    flush_streams()
    atexit._run_exitfuncs()
    flush_streams()
    os._exit(status or 0)
