"""tables: the snapshot list as the student reads it (the GPU table: tests/gpu/test_gpustatus.py)."""

from __future__ import annotations

from gpushell.core import snapshotlist
from gpushell.core.protocol import decode, encode
from gpushell.core.snapshotlist import Snapshot
from gpushell.student import tables
from gpushell.student.banner import PLAIN

SNAPS = [
    Snapshot("before-upgrade", 1764340200, 295698432, True),
    Snapshot("snap-20261128-1200", 1764331200, 2048, False),
]


def test_render():
    info = decode(encode(snapshotlist.encode(SNAPS, 3)))
    assert tables.snapshot_list(info, PLAIN) == (
        "Your snapshots (2 of 3, 282.0 MiB in all):\n"
        "  1) before-upgrade                   2025-11-28 14:30 UTC   282.0 MiB  taken while running\n"
        "  2) snap-20261128-1200               2025-11-28 12:00 UTC     2.0 KiB  taken while stopped\n"
    )


def test_none_yet_says_the_limit():
    assert tables.snapshot_list({"snapshots": "0", "snapshot_limit": "3"}, PLAIN) == (
        "You have no snapshots (you may keep 3).\n"
    )
