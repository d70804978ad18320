"""Exit statuses and the one error type that crosses module boundaries."""

from __future__ import annotations


class ExitStatus:
    """Every exit code gpushell programs use, mapped in one place.

    Plain ints rather than an IntEnum: `enum` stays off the login path
    (loginproc.py).
    """

    OK = 0
    ERROR = 1  # an action failed (container would not start, ...)
    USAGE = 2  # bad command line or refused command
    CONFIG = 3  # registry missing, broken or unsafe
    NOT_REGISTERED = 4  # the user has no registry entry
    HELPER = 5  # the privileged helper could not be run or answered nonsense
    TIMEOUT = 6  # the container did not become reachable in time
    INTERRUPTED = 130

    @classmethod
    def known(cls, code: int) -> bool:
        """Whether code is one of the statuses above (the shell trusts no other from the helper)."""
        return code in _KNOWN


_KNOWN = frozenset(value for name, value in vars(ExitStatus).items() if name.isupper())


class GpushellError(Exception):
    """An error with a message for the person at the keyboard and one for the log.

    The user message is safe to show a student: it never carries paths,
    tracebacks or registry contents.  The log message carries the details
    an administrator needs.
    """

    def __init__(
        self,
        user_message: str,
        log_message: str | None = None,
        status: int = ExitStatus.ERROR,
    ) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.log_message = log_message or user_message
        self.status = status


CONTACT_ADMIN = "gpushell is not available right now; please contact your administrator."
