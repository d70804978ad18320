"""The student's GPU loans as they read them (pure rendering of the helper's `loans=` keys).

`loans=GPU:ENDS:WARNED,...` and `now=` (epoch seconds, the helper's clock),
`queue_place=N` while waiting; helper/loans.py writes them.
"""

from __future__ import annotations

from ..core.durations import duration_text
from ..core.protocol import Answer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .banner import Palette

MAX_SHOWN = 64


def decode(info: Answer) -> list[tuple[int, int, bool]]:
    """(GPU, end, warned) of each well-formed loan in the answer; anything else is skipped."""
    loans = []
    for item in info.get("loans", "").split(",")[:MAX_SHOWN]:
        parts = item.split(":")
        if len(parts) == 3 and all(part.isascii() and part.isdigit() for part in parts):
            loans.append((int(parts[0]), int(parts[1]), parts[2] == "1"))
    return loans


def _now(info: Answer) -> int:
    text = info.get("now", "")
    return int(text) if text.isascii() and text.isdigit() else 0


def lines(info: Answer, p: Palette) -> str:
    """A line per borrowed GPU with its time left, the end near in warning colour; the place in line."""
    now, out = _now(info), []
    for gpu, ends, warned in decode(info):
        left = f"{duration_text(ends - now)} left"
        if warned:
            more = f"extend {gpu} 2h for more"
            out.append(f"{p.bad}Borrowed GPU {gpu}: {left}; it goes back then ({more}){p.reset}")
        else:
            out.append(f"Borrowed GPU {gpu}: {left}")
    place = info.get("queue_place", "")
    if place.isascii() and place.isdigit():
        out.append(f"Waiting for a GPU: place {place} in line")
    return "".join(f"{line}\n" for line in out)


def outcome(action: str, info: Answer, p: Palette) -> str:
    """What a borrow, extend or return did, then the loans as they stand."""
    if action == "borrow":
        lent = info.get("lent", "")
        done = f"You have GPU {lent.replace(',', ', ')} now.\n" if lent else ""
    elif action == "extend":
        done = f"Extended GPU {info.get('extended', '?')}.\n"
    else:
        returned = info.get("returned", "")
        done = f"Returned GPU {returned.replace(',', ', ')}.\n" if returned else "Nothing to return.\n"
        if info.get("restarted") == "1":  # on a cluster: the only way to end what held it
            done += "Your container restarted to end the processes on it.\n"
        elif info.get("watched") == "1":  # on a cluster: its server showed none of them on it
            done += "No process of yours was on it: your container keeps running (it restarts if one was).\n"
    return done + (lines(info, p) or "You have no borrowed GPUs.\n")
