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


def render(book: LoanBook, now: float) -> str:
    """The loans by GPU, then the line in order; a line saying so where either is empty."""
    lines: list[str] = []
    if book.loans:
        rows = [
            (loan.user, str(loan.gpu), clock(loan.started), clock(loan.ends),
             duration_text(loan.ends - now) if loan.ends > now else "ended", "yes" if loan.warned else "no")
            for loan in book.loans
        ]  # fmt: skip
        lines += _table(LOAN_HEADER, rows)
    else:
        lines.append("no GPU is lent")
    lines.append("")
    if book.queue:
        waiting = [
            (str(place), waiter.user, str(waiter.count), duration_text(waiter.duration), clock(waiter.since))
            for place, waiter in enumerate(book.queue, 1)
        ]
        lines += _table(QUEUE_HEADER, waiting)
    else:
        lines.append("nobody is waiting")
    return "\n".join(lines) + "\n"


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
