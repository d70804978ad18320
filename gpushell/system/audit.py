"""The audit trail: one syslog line (auth facility) per action and refusal."""

from __future__ import annotations

import syslog

_opened = False


def open_log(ident: str) -> None:
    global _opened
    syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_AUTH)
    _opened = True


def clean(value: object, limit: int = 200) -> str:
    """A value made safe for one log line: printable, bounded, quoted if odd."""
    text = str(value)
    if text.isprintable() and " " not in text and len(text) <= limit:
        return text
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def record(user: str, action: str, result: str, detail: str = "", *, warning: bool = False) -> None:
    """Log `user=alice action=start result=ok ...` at notice (or warning) level."""
    if not _opened:
        open_log("gpushell")
    line = f"user={clean(user)} action={clean(action)} result={clean(result)}"
    if detail:
        line += f" detail={clean(detail, 500)}"
    syslog.syslog(syslog.LOG_WARNING if warning else syslog.LOG_NOTICE, line)
