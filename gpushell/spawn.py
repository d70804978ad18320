"""Running a program: posix_spawn, pipes and select, nothing more.

`subprocess` would add its imports (threading, selectors, ...) to every
login, for both the student's shell and the root helper; this is the
little of it gpushell needs.  A tick callback runs while the child works,
so the shell can draw a spinner.  `start` leaves a child running while the
caller works on, and collects it later.  The program is found by absolute
path or on the PATH of the environment given, never the caller's.
"""

from __future__ import annotations

import os
import select
import time

from .signals import SIGKILL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


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


def run(
    argv: Sequence[str],
    env: dict[str, str],
    tick: Callable[[float], None] = _no_tick,
    stdin: bytes | None = None,
    timeout: float | None = None,
    interval: float = 0.1,
) -> tuple[int, str, str]:
    """Run argv; return (exit status, stdout, stderr).  stdin is /dev/null unless given."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    in_read, in_write = os.pipe() if stdin is not None else (os.open(os.devnull, os.O_RDONLY), -1)
    try:
        pid = os.posix_spawn(
            _resolve(argv[0], env), list(argv), env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, in_read, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ],
        )  # fmt: skip
    except OSError:
        for fd in (out_read, err_read, in_write):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (out_write, err_write, in_read):
            os.close(fd)
    chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
    pending = [out_read, err_read]
    to_write = memoryview(stdin or b"")
    writers = [in_write] if in_write >= 0 else []
    began = time.monotonic()
    try:
        while pending or writers:
            ready, writable, _ = select.select(pending, writers, [], interval)
            if writable:
                try:
                    sent = os.write(in_write, to_write[:65536])
                except BrokenPipeError:
                    sent = len(to_write)
                to_write = to_write[sent:]
                if not to_write:
                    os.close(in_write)
                    writers = []
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    pending.remove(fd)
            elapsed = time.monotonic() - began
            if timeout is not None and elapsed > timeout:
                os.kill(pid, SIGKILL)
                os.waitpid(pid, 0)
                raise Timeout(f"{argv[0]} ran longer than {timeout} s")
            if not ready and not writable:
                tick(elapsed)
    finally:
        for fd in (out_read, err_read, *writers):
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    out, err = (b"".join(chunks[fd]).decode(errors="replace") for fd in (out_read, err_read))
    return os.waitstatus_to_exitcode(status), out, err


def _memory_file(content: bytes = b"") -> int:
    fd = os.memfd_create("gpushell-spawn", os.MFD_CLOEXEC)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class Child:
    """A program start() left running; wait() collects its status and output."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], stdin: bytes | None) -> None:
        self.argv = list(argv)
        # Its input and output are memory files, not pipes: it never blocks on
        # a full pipe while the caller is busy elsewhere.
        in_fd = _memory_file(stdin) if stdin is not None else os.open(os.devnull, os.O_RDONLY)
        self._out, self._err = _memory_file(), _memory_file()
        try:
            self.pid = os.posix_spawn(
                _resolve(argv[0], env), self.argv, env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, in_fd, 0),
                    (os.POSIX_SPAWN_DUP2, self._out, 1),
                    (os.POSIX_SPAWN_DUP2, self._err, 2),
                ],
            )  # fmt: skip
        except OSError:
            self._close()
            raise
        finally:
            os.close(in_fd)

    def _close(self) -> None:
        for fd in (self._out, self._err):
            os.close(fd)

    def wait(self, timeout: float | None = None) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once it has ended; killed past timeout seconds."""
        try:
            pidfd = os.pidfd_open(self.pid)
            try:
                ended, _, _ = select.select([pidfd], [], [], timeout)
            finally:
                os.close(pidfd)
            if not ended:
                os.kill(self.pid, SIGKILL)
                os.waitpid(self.pid, 0)
                raise Timeout(f"{self.argv[0]} ran longer than {timeout} s")
            _, status = os.waitpid(self.pid, 0)
            out, err = (os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
                        for fd in (self._out, self._err))  # fmt: skip
        finally:
            self._close()
        return os.waitstatus_to_exitcode(status), out, err


def start(argv: Sequence[str], env: dict[str, str], stdin: bytes | None = None) -> Child:
    """Start argv and return at once; stdin is /dev/null unless given."""
    return Child(argv, env, stdin)
