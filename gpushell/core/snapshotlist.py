"""A student's snapshots in the helper's answer, and their rendering (pure).

Like the GPU table (gputable.py), one `key=value` line per snapshot, fields
separated by `|`:

    snapshots=2                    how many follow
    snapshot_limit=3               how many the student may keep
    snapshot0=before-upgrade|1764350000|295698432|running
                                   name|created (epoch s)|bytes on disk|state when taken

Names are checked by menu.is_snapshot_name before they are ever made, so
they hold no separator.  Imported by the login shell: nothing heavy.
"""

from __future__ import annotations

import time  # loaded at interpreter start-up anyway

from .model import Value
from .units import size_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .banner import Palette

SEPARATOR = "|"


class Snapshot(Value):
    """One snapshot: as the helper found it on disk, and as the student's side reads it back."""

    __slots__ = ("created", "name", "running", "size")

    def __init__(self, name: str, created: int, size: int, running: bool) -> None:
        self.name, self.created, self.size, self.running = name, created, size, running


def encode(snapshots: list[Snapshot], limit: int) -> dict[str, object]:
    answer: dict[str, object] = {"snapshots": len(snapshots), "snapshot_limit": limit}
    for index, snap in enumerate(snapshots):
        state = "running" if snap.running else "stopped"
        answer[f"snapshot{index}"] = SEPARATOR.join((snap.name, str(snap.created), str(snap.size), state))
    return answer


def _int(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() else 0


def decode(info: dict[str, str]) -> list[Snapshot]:
    """The snapshots in an answer; malformed lines are skipped, never fatal."""
    listed = []
    for index in range(min(_int(info.get("snapshots", "0")), 1000)):
        fields = info.get(f"snapshot{index}", "").split(SEPARATOR)
        if len(fields) == 4 and fields[0]:
            listed.append(Snapshot(fields[0], _int(fields[1]), _int(fields[2]), fields[3] == "running"))
    return listed


def when_text(created: int) -> str:
    """UTC time of day and date, without `time.strftime`'s locale (it is the same everywhere)."""
    t = time.gmtime(created)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d} UTC"


def render(info: dict[str, str], p: Palette) -> str:
    listed = decode(info)
    limit = _int(info.get("snapshot_limit", "0"))
    if not listed:
        return f"You have no snapshots (you may keep {limit}).\n"
    rows = [
        f"  {p.bold}{n}{p.reset}) {s.name:<32} {when_text(s.created)}  {size_text(s.size):>10}"
        f"  {p.dim}taken while {'running' if s.running else 'stopped'}{p.reset}"
        for n, s in enumerate(listed, 1)
    ]
    total = size_text(sum(s.size for s in listed))
    return f"Your snapshots ({len(listed)} of {limit}, {total} in all):\n" + "\n".join(rows) + "\n"
