"""The one place gpushell runs external commands.

Always an argv list, never a shell; always a minimal environment, so nothing
a student sets (PATH, LD_PRELOAD, PYTHON*, LC_*) reaches a privileged
program.  Tests check exact argv lists through `record` hooks.

Every program has a timeout, and a caller that set a `deadline` (the root
helper: one per verb) shortens each timeout to what is left of it, so no
program outlives the action.  Output is capped (`max_output`, per stream);
a failing program's stderr goes to the log message, never to the message
a student sees: it can carry host paths, or text a container chose.
"""

from __future__ import annotations

import time

from ..core.errors import ExitStatus, GpushellError
from . import spawn
from .environment import SAFE_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# Plenty for any message or small report; callers that read a big output of
# a trusted host tool (iptables-save, lxc-ls) pass a larger cap, callers that
# run something inside a container a smaller one.
DEFAULT_MAX_OUTPUT = 64 * 1024
MESSAGE_OUTPUT = 1024  # enough for a message: what to keep of a container's output
LARGE_OUTPUT = 16 * 1024 * 1024  # a trusted host tool's report (1000 rules, 1000 containers)


class Result:
    """What a command did: its exit status and its output."""

    __slots__ = ("returncode", "stderr", "stdout")

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


# Called with every argv before it runs; tests append to a list here.
observers: list[Callable[[Sequence[str]], None]] = []

# time.monotonic() by which everything must be done (the helper's verb), or None.
_deadline: list[float | None] = [None]
# Whether error messages may quote a tool's own stderr: yes for the admin at
# the keyboard, no once the helper said a student reads them (for_students).
_quote_tools: list[bool] = [True]


def for_students() -> None:
    """Error messages from here on are a student's: the tool's name, its output only in the log."""
    _quote_tools[0] = False


class Deadline(GpushellError):
    """The action ran past its deadline."""

    def __init__(self, log_message: str) -> None:
        super().__init__(
            "this took too long and was stopped; try again, or ask your admin if it keeps happening",
            log_message,
            ExitStatus.TIMEOUT,
        )


def set_deadline(seconds: float | None) -> None:
    """From now on, no program runs past `seconds` from now (None: no deadline)."""
    _deadline[0] = None if seconds is None else time.monotonic() + seconds


def remaining() -> float | None:
    """Seconds left before the deadline (never negative), or None when there is none."""
    deadline = _deadline[0]
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def bounded(timeout: float, what: str = "") -> float:
    """timeout, shortened to what is left of the deadline; Deadline when nothing is."""
    left = remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise Deadline(f"deadline passed before {what or 'the next step'}")
    return min(timeout, left)


def run(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 120.0,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> Result:
    """Run argv and return its result; raise GpushellError when check fails."""
    for observe in observers:
        observe(argv)
    limit = bounded(timeout, str(argv[0]))
    try:
        status, out, err = spawn.run(
            argv,
            SAFE_ENV,
            stdin=None if stdin is None else stdin.encode(),
            timeout=limit,
            max_output=max_output,
        )
    except (OSError, spawn.Timeout) as exc:
        raise _not_run(argv, exc, limit < timeout) from exc
    return _checked(argv, Result(status, out, err), check)


def program(argv: Sequence[str]) -> str:
    """The program's bare name: what a student may see of a command (no host path)."""
    return str(argv[0]).rsplit("/", 1)[-1]


def _not_run(argv: Sequence[str], exc: Exception, cut_by_deadline: bool = False) -> GpushellError:
    log = f"running {list(argv)} failed: {exc}"
    if cut_by_deadline and isinstance(exc, spawn.Timeout):
        return Deadline(log)
    return GpushellError(f"could not run {program(argv)}", log)


def _checked(argv: Sequence[str], result: Result, check: bool) -> Result:
    if check and result.returncode != 0:
        raise GpushellError(
            failure_message(argv, result, _quote_tools[0]),
            f"{list(argv)} exited {result.returncode}: {tail(result.stderr or result.stdout)}",
        )
    return result


def failure_message(argv: Sequence[str], result: Result, quote_tool: bool) -> str:
    """What the person at the keyboard reads when argv failed."""
    if not quote_tool:
        return f"{program(argv)} failed; the details are in the system log"
    detail = (result.stderr or result.stdout).strip().splitlines()
    last = detail[-1][:300] if detail else f"exit status {result.returncode}"
    return f"{program(argv)} failed: {last}"


def tail(text: str, limit: int = 2000) -> str:
    """The end of a program's output, for a log line: where its error usually is."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
