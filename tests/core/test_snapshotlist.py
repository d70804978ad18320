"""snapshotlist: a student's snapshots in the helper's answer, and their rendering."""

from __future__ import annotations

from gpushell.core import snapshotlist
from gpushell.core.banner import PLAIN
from gpushell.core.protocol import decode, encode


class Snap:
    def __init__(self, name: str, created: int, size: int, running: bool) -> None:
        self.name, self.created, self.size, self.running = name, created, size, running


SNAPS = [
    Snap("before-upgrade", 1764340200, 295698432, True),
    Snap("snap-20261128-1200", 1764331200, 2048, False),
]


def test_round_trip_through_the_answer_lines():
    info = decode(encode(snapshotlist.encode(SNAPS, 3)))  # type: ignore[arg-type]
    listed = snapshotlist.decode(info)
    assert [(s.name, s.created, s.size, s.running) for s in listed] == [
        ("before-upgrade", 1764340200, 295698432, True),
        ("snap-20261128-1200", 1764331200, 2048, False),
    ]


def test_render():
    info = decode(encode(snapshotlist.encode(SNAPS, 3)))  # type: ignore[arg-type]
    assert snapshotlist.render(info, PLAIN) == (
        "Your snapshots (2 of 3, 282.0 MiB in all):\n"
        "  1) before-upgrade                   2025-11-28 14:30 UTC   282.0 MiB  taken while running\n"
        "  2) snap-20261128-1200               2025-11-28 12:00 UTC     2.0 KiB  taken while stopped\n"
    )


def test_none_yet_says_the_limit():
    assert snapshotlist.render({"snapshots": "0", "snapshot_limit": "3"}, PLAIN) == (
        "You have no snapshots (you may keep 3).\n"
    )


def test_malformed_lines_are_skipped():
    info = {"snapshots": "3", "snapshot0": "a|1|2", "snapshot1": "b|x|2|stopped", "snapshot2": "|1|1|running"}
    assert [(s.name, s.created) for s in snapshotlist.decode(info)] == [("b", 0)]
    assert snapshotlist.decode({"snapshots": "lots"}) == []


def test_sizes():
    assert [snapshotlist.size_text(n) for n in (0, 1023, 1024, 5 * 2**20, 3 * 2**30, 2**42)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3.0 GiB", "4096.0 GiB",
    ]  # fmt: skip
