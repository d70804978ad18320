"""Running a program: posix_spawn, pipes and select, nothing more.

The login path's stand-in for `subprocess` (loginproc.py says why): the
little of it gpushell needs, and the one way gpushell runs a program
(runner.py wraps it for everything but the shell's own helper call).
A tick callback runs while the child works, so the shell can draw a
spinner.  The program is found by absolute path or on the PATH of the
environment given, never the caller's.

Output is capped: the first `max_output` bytes of each stream are kept,
the rest is read and thrown away, so a child (or a container behind
`lxc-attach`) that floods never blocks on a full pipe and never makes the
caller buffer more than the cap.  A child that floods forever ends at its
timeout like any other.
"""

from __future__ import annotations

import os
import select
import time

from .loginproc import SIGKILL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# What a caller keeps of each stream unless it asks for more: plenty for a
# message or a small report, and a flood costs no more than this.
DEFAULT_MAX_OUTPUT = 64 * 1024
CHUNK = 65536


class Timeout(Exception):
    pass


def _no_tick(_seconds: float) -> None:
    pass


def _resolve(program: str, env: dict[str, str]) -> str:
    if "/" in program:
        return program
    for directory in env.get("PATH", "").split(":"):
        candidate = os.path.join(directory, program)
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{program} not found on {env.get('PATH', '')}")


class Capped:
    """The first `limit` bytes written to it; the rest is only counted."""

    __slots__ = ("chunks", "dropped", "kept", "limit")

    def __init__(self, limit: int) -> None:
        self.limit, self.kept, self.dropped = limit, 0, 0
        self.chunks: list[bytes] = []

    def add(self, data: bytes) -> None:
        room = self.limit - self.kept
        if room > 0:
            self.chunks.append(data[:room])
            self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def _spawn(argv: Sequence[str], env: dict[str, str], stdin_fd: int, out_fd: int, err_fd: int) -> int:
    return os.posix_spawn(
        _resolve(argv[0], env), list(argv), env,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, stdin_fd, 0),
            (os.POSIX_SPAWN_DUP2, out_fd, 1),
            (os.POSIX_SPAWN_DUP2, err_fd, 2),
        ],
    )  # fmt: skip


def _kill(pid: int) -> None:
    """SIGKILL and reap pid (already gone: nothing to do)."""
    try:
        os.kill(pid, SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _collect(
    pid: int,
    readers: list[int],
    in_write: int,
    stdin: bytes,
    timeout: float | None,
    tick: Callable[[float], None],
    interval: float,
    max_output: int,
    name: str,
    finish_on_interrupt: bool = False,
) -> tuple[int, str, str]:
    """Feed stdin, read both streams (capped) to EOF, reap pid; the fds are closed here.

    Any exception on the way (the timeout, a signal handler's) kills the
    child first: nothing is left running behind the caller's back.  With
    finish_on_interrupt a Ctrl-C (KeyboardInterrupt) leaves it running: the
    login shell's helper call, which must finish what it began.
    """
    kept = {fd: Capped(max_output) for fd in readers}
    pending = list(readers)
    to_write = memoryview(stdin)
    writers = [in_write] if in_write >= 0 else []
    began = time.monotonic()
    reaped = False
    try:
        while pending or writers:
            ready, writable, _ = select.select(pending, writers, [], interval)
            if writable:
                try:
                    sent = os.write(in_write, to_write[:CHUNK])
                except BrokenPipeError:
                    sent = len(to_write)
                to_write = to_write[sent:]
                if not to_write:
                    os.close(in_write)
                    writers = []
            for fd in ready:
                data = os.read(fd, CHUNK)
                if data:
                    kept[fd].add(data)
                else:
                    pending.remove(fd)
            elapsed = time.monotonic() - began
            if timeout is not None and elapsed > timeout:
                raise Timeout(f"{name} ran longer than {timeout} s")
            if not ready and not writable:
                tick(elapsed)
        # Both streams closed; the child may still run (it closed them, or
        # passed them on): its exit is bounded by the same timeout.
        status = _wait_exit(pid, None if timeout is None else max(0.0, timeout - (time.monotonic() - began)))
        if status is None:
            raise Timeout(f"{name} ran longer than {timeout} s")
        reaped = True
    except KeyboardInterrupt:
        reaped = finish_on_interrupt  # not waited for: it goes on, and init reaps it
        raise
    finally:
        if not reaped:
            _kill(pid)
        for fd in (*readers, *writers):
            os.close(fd)
    out, err = (kept[fd].text() for fd in readers)
    return os.waitstatus_to_exitcode(status), out, err


def _wait_exit(pid: int, timeout: float | None) -> int | None:
    """pid's wait status once it exits, or None past timeout (it still runs then)."""
    pidfd = os.pidfd_open(pid)
    try:
        ended, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return os.waitpid(pid, 0)[1] if ended else None


def run(
    argv: Sequence[str],
    env: dict[str, str],
    tick: Callable[[float], None] = _no_tick,
    stdin: bytes | None = None,
    timeout: float | None = None,
    interval: float = 0.1,
    max_output: int = DEFAULT_MAX_OUTPUT,
    finish_on_interrupt: bool = False,
) -> tuple[int, str, str]:
    """Run argv; return (exit status, stdout, stderr), each at most max_output bytes.

    stdin is /dev/null unless given; finish_on_interrupt: see _collect.
    """
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    in_read, in_write = os.pipe() if stdin is not None else (os.open(os.devnull, os.O_RDONLY), -1)
    try:
        pid = _spawn(argv, env, in_read, out_write, err_write)
    except OSError:
        for fd in (out_read, err_read, in_write):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (out_write, err_write, in_read):
            os.close(fd)
    return _collect(
        pid,
        [out_read, err_read],
        in_write,
        stdin or b"",
        timeout,
        tick,
        interval,
        max_output,
        argv[0],
        finish_on_interrupt,
    )
