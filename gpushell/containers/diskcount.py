"""A container's disk use where the storage cannot tell it: counted, bounded, remembered.

On `dir` storage the only measure is a walk of the rootfs (rootfs.count_tree),
and its length is the container's to decide: a million empty files cost
container root nothing.  The walk runs as root, outside the container's CPU
limit, on the disk every student shares.  So a student's `status` cannot
buy root's time beyond a small share:

- a walk stops after MOST_NAMES names or SECONDS of time, and its figure
  then says "at least";
- its figure is remembered (paths.disk_count, root's, in the run
  directory) and shown again until SPACING times the walk's own time has
  passed: each student keeps root walking at most 1/SPACING of the time,
  and an ordinary rootfs (a fraction of a second) is counted afresh at
  nearly every look.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

from ..system import rootfs
from ..system.files import read_private, write_private

MOST_NAMES = 2_000_000  # a large conda-laden rootfs holds some hundreds of thousands
SECONDS = 10.0  # of the status verb's 60
SPACING = 30
LONGEST = 3600.0  # seconds a count stands in at most, however long its walk took
MAX_RECORD = 128


@dataclasses.dataclass(frozen=True)
class DiskCount:
    bytes: int
    complete: bool  # False: the walk stopped at its bound, bytes is a floor
    counted_at: float  # time.time() when the walk ended
    took: float  # seconds the walk took

    def fresh_at(self, now: float) -> bool:
        """Whether this count stands in for a new walk at now (a clock set back counts again)."""
        return self.counted_at <= now < self.counted_at + min(SPACING * self.took, LONGEST)

    def record(self) -> str:
        return f"{self.bytes} {int(self.complete)} {self.counted_at!r} {self.took!r}\n"


def from_record(text: str | None) -> DiskCount | None:
    """A record's count; None for anything but exactly what record() writes."""
    fields = (text or "").split()
    if len(fields) != 4 or fields[1] not in ("0", "1"):
        return None
    try:
        count = DiskCount(int(fields[0]), fields[1] == "1", float(fields[2]), float(fields[3]))
    except ValueError:
        return None
    return count if count.bytes >= 0 and count.took >= 0 else None


def counted(record: str, top: str, now: float | None = None) -> DiskCount | None:
    """The rootfs at top counted, or its last count while that stands in (record: where it is kept).
    None when top cannot be read (no rootfs)."""
    now = time.time() if now is None else now
    last = from_record(read_private(record, MAX_RECORD))
    if last is not None and last.fresh_at(now):
        return last
    began = time.monotonic()
    try:
        walk = rootfs.count_tree(top, MOST_NAMES, SECONDS)
    except OSError:
        return None
    took = time.monotonic() - began
    count = DiskCount(walk.bytes, walk.complete, now + took, took)
    with contextlib.suppress(OSError):  # unremembered, the next look counts again: still bounded
        write_private(record, count.record())
    return count


def forget(record: str) -> None:
    """The count no longer stands for the rootfs (the student is removed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record)
