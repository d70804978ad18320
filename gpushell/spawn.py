"""Running the helper from the login shell: posix_spawn, two pipes, select.

The `subprocess` module would cost every login its import; this is the
little of it the shell needs.  A tick callback runs while the child works,
so the shell can draw a spinner.
"""

from __future__ import annotations

import os
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def run(
    argv: Sequence[str], env: dict[str, str], tick: Callable[[float], None], interval: float = 0.1
) -> tuple[int, str, str]:
    """Run argv with stdin from /dev/null; return (exit status, stdout, stderr)."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.posix_spawn(
            argv[0], list(argv), env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ],
        )  # fmt: skip
    except OSError:
        for fd in (out_read, err_read):
            os.close(fd)
        raise
    finally:
        for fd in (out_write, err_write, devnull):
            os.close(fd)
    chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
    pending = [out_read, err_read]
    began = time.monotonic()
    try:
        while pending:
            ready, _, _ = select.select(pending, [], [], interval)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    pending.remove(fd)
            if not ready:
                tick(time.monotonic() - began)
    finally:
        for fd in (out_read, err_read):
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    out, err = (b"".join(chunks[fd]).decode(errors="replace") for fd in (out_read, err_read))
    return os.waitstatus_to_exitcode(status), out, err
