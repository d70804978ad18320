"""snapshotlist: a student's snapshots in the helper's answer."""

from __future__ import annotations

from gpushell.core import snapshotlist
from gpushell.core.protocol import decode, encode
from gpushell.core.snapshotlist import Snapshot
from gpushell.core.units import size_text

SNAPS = [
    Snapshot("before-upgrade", 1764340200, 295698432, True),
    Snapshot("snap-20261128-1200", 1764331200, 2048, False),
]


def test_round_trip_through_the_answer_lines():
    info = decode(encode(snapshotlist.encode(SNAPS, 3)))
    listed = snapshotlist.decode(info)
    assert [(s.name, s.created, s.size, s.running) for s in listed] == [
        ("before-upgrade", 1764340200, 295698432, True),
        ("snap-20261128-1200", 1764331200, 2048, False),
    ]


def test_malformed_lines_are_skipped():
    info = {"snapshots": "3", "snapshot0": "a|1|2", "snapshot1": "b|x|2|stopped", "snapshot2": "|1|1|running"}
    assert [(s.name, s.created) for s in snapshotlist.decode(info)] == [("b", 0)]
    assert snapshotlist.decode({"snapshots": "lots"}) == []


def test_sizes():
    assert [size_text(n) for n in (0, 1023, 1024, 5 * 2**20, 3 * 2**30, 2**42)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3.0 GiB", "4096.0 GiB",
    ]  # fmt: skip
