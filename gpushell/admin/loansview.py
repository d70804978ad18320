"""`gpushell-admin loans`: the loan book as a table or JSON (pure: the book and the time in, text out)."""

from __future__ import annotations

import json
import time

from ..core.durations import duration_text
from ..core.lending import LoanBook

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

LOAN_HEADER = ("USER", "GPU", "STARTED", "ENDS", "LEFT", "WARNED")
QUEUE_HEADER = ("PLACE", "USER", "GPUS", "FOR", "WAITING SINCE")


def clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    cells = [header, *rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in cells]


def render(book: LoanBook, now: float, members: dict[str, str] | None = None) -> str:
    """The loans by GPU, then the line in order; a line saying so where either is empty.

    members (a cluster's: student -> member) adds a MEMBER column: a GPU
    number is its member's, and each member has its own line.
    """
    lines: list[str] = []
    if book.loans:
        rows = [
            (loan.user, *_member(members, loan.user), str(loan.gpu), clock(loan.started), clock(loan.ends),
             duration_text(loan.ends - now) if loan.ends > now else "ended", "yes" if loan.warned else "no")
            for loan in book.loans
        ]  # fmt: skip
        lines += _table(_with_member(LOAN_HEADER, members), rows)
    else:
        lines.append("no GPU is lent")
    lines.append("")
    if book.queue:
        waiting = [
            (str(place), waiter.user, *_member(members, waiter.user), str(waiter.count),
             duration_text(waiter.duration), clock(waiter.since))
            for waiter, place in zip(book.queue, _places(book, members), strict=True)
        ]  # fmt: skip
        lines += _table(_with_member(QUEUE_HEADER, members), waiting)
    else:
        lines.append("nobody is waiting")
    return "\n".join(lines) + "\n"


def _member(members: dict[str, str] | None, user: str) -> tuple[str, ...]:
    return () if members is None else (members.get(user, "?"),)


def _with_member(header: tuple[str, ...], members: dict[str, str] | None) -> tuple[str, ...]:
    at = header.index("USER") + 1
    return header if members is None else (*header[:at], "MEMBER", *header[at:])


def _places(book: LoanBook, members: dict[str, str] | None) -> list[int]:
    """Each waiter's place: in the whole line, or on a cluster in their member's."""
    seen: dict[str, int] = {}
    places = []
    for waiter in book.queue:
        line = "" if members is None else members.get(waiter.user, "?")
        seen[line] = seen.get(line, 0) + 1
        places.append(seen[line])
    return places


def to_json(book: LoanBook, now: float) -> str:
    """{"now", "loans": [{user, gpu, started, ends, seconds_left, warned, last_used}], "queue": [...]}."""
    loans = [
        {
            "user": loan.user, "gpu": loan.gpu, "started": int(loan.started), "ends": int(loan.ends),
            "seconds_left": max(0, int(loan.ends - now)), "warned": loan.warned,
            "last_used": int(loan.last_used),
        }
        for loan in book.loans
    ]  # fmt: skip
    queue = [
        {"place": place, "user": waiter.user, "count": waiter.count, "duration": waiter.duration,
         "since": int(waiter.since)}
        for place, waiter in enumerate(book.queue, 1)
    ]  # fmt: skip
    return json.dumps({"now": int(now), "loans": loans, "queue": queue}, indent=2)
