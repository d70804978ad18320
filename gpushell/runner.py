"""The one place gpushell runs external commands.

Always an argv list, never a shell; always a minimal environment, so nothing
a student sets (PATH, LD_PRELOAD, PYTHON*, LC_*) reaches a privileged
program.  Tests check exact argv lists through `record` hooks.
"""

from __future__ import annotations

from . import spawn
from .environment import SAFE_ENV
from .errors import GpushellError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Result:
    """What a command did: its exit status and its output."""

    __slots__ = ("returncode", "stderr", "stdout")

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


# Called with every argv before it runs; tests append to a list here.
observers: list[Callable[[Sequence[str]], None]] = []


def run(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> Result:
    """Run argv and return its result; raise GpushellError when check fails."""
    for observe in observers:
        observe(argv)
    try:
        status, out, err = spawn.run(
            argv, SAFE_ENV, stdin=None if stdin is None else stdin.encode(), timeout=timeout
        )
    except (OSError, spawn.Timeout) as exc:
        raise _not_run(argv, exc) from exc
    return _checked(argv, Result(status, out, err), check)


class Started:
    """A command start() left running: result() waits for it and checks it as run() would."""

    def __init__(self, argv: Sequence[str], stdin: str | None) -> None:
        for observe in observers:
            observe(argv)
        self.argv = argv
        try:
            self._child = spawn.start(argv, SAFE_ENV, None if stdin is None else stdin.encode())
        except OSError as exc:
            raise _not_run(argv, exc) from exc

    def result(self, check: bool = True, timeout: float = 120.0) -> Result:
        try:
            status, out, err = self._child.wait(timeout)
        except (OSError, spawn.Timeout) as exc:
            raise _not_run(self.argv, exc) from exc
        return _checked(self.argv, Result(status, out, err), check)


def start(argv: Sequence[str], *, stdin: str | None = None) -> Started:
    """Start argv and return at once, for the caller to work meanwhile; result() collects it."""
    return Started(argv, stdin)


def _not_run(argv: Sequence[str], exc: Exception) -> GpushellError:
    return GpushellError(f"could not run {argv[0]}", f"running {list(argv)} failed: {exc}")


def _checked(argv: Sequence[str], result: Result, check: bool) -> Result:
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {result.returncode}"
        raise GpushellError(
            f"{argv[0].rsplit('/', 1)[-1]} failed: {last}",
            f"{list(argv)} exited {result.returncode}: {result.stderr.strip()}",
        )
    return result
