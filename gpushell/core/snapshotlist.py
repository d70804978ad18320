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

from .value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

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


def count(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() else 0


def decode(info: dict[str, str]) -> list[Snapshot]:
    """The snapshots in an answer; malformed lines are skipped, never fatal."""
    listed = []
    for index in range(min(count(info.get("snapshots", "0")), 1000)):
        fields = info.get(f"snapshot{index}", "").split(SEPARATOR)
        if len(fields) == 4 and fields[0]:
            listed.append(Snapshot(fields[0], count(fields[1]), count(fields[2]), fields[3] == "running"))
    return listed
