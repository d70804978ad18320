"""diskcount: a rootfs's count on disk, bounded and remembered, on real directories."""

from __future__ import annotations

import os

import pytest

from gpushell.containers import diskcount
from gpushell.containers.diskcount import DiskCount
from gpushell.system import rootfs


@pytest.fixture
def tree(tmp_path):
    top = tmp_path / "rootfs"
    for directory in range(5):
        (top / f"d{directory}").mkdir(parents=True)
        for name in range(40):
            (top / f"d{directory}" / f"f{name}").write_bytes(os.urandom(4096))
    return top


@pytest.fixture
def record(tmp_path):
    return str(tmp_path / "disk-ann.count")


# --- the bounded walk (rootfs.count_tree) ------------------------------------------


def test_an_unbounded_count_is_the_whole_tree(tree):
    count = rootfs.count_tree(str(tree))
    assert count.complete and count.names == 5 + 5 * 40
    assert count.bytes == rootfs.tree_size(str(tree)) >= 200 * 4096


def test_a_count_stops_after_its_names_and_says_so(tree):
    count = rootfs.count_tree(str(tree), most_names=50)
    assert not count.complete
    assert count.names == 50
    # Fewer bytes than the whole, and never more than the names it looked at can hold.
    assert 0 < count.bytes < rootfs.tree_size(str(tree))
    assert count.bytes <= 4096 * 51 + 5 * 4096 * 2


def test_a_count_stops_when_its_time_is_up(tree):
    count = rootfs.count_tree(str(tree), seconds=-1.0)  # already past: the first look at the clock
    assert not count.complete and count.names == 0


def test_a_count_within_its_bounds_is_complete(tree):
    count = rootfs.count_tree(str(tree), most_names=10_000, seconds=60.0)
    assert count.complete and count.bytes == rootfs.tree_size(str(tree))


# --- remembered counts ----------------------------------------------------------------


def test_a_record_reads_back_as_written():
    count = DiskCount(123456789, False, 1764950000.25, 0.5)
    assert diskcount.from_record(count.record()) == count


@pytest.mark.parametrize(
    "text",
    [None, "", "1 1 2", "1 2 3 4", "x 1 2 3", "-1 1 2 3", "1 1 2 -3", "1 1 2 nan", "1 1 2 3 4", "1 yes 2 3"],
)
def test_anything_else_in_a_record_is_no_count(text):
    assert diskcount.from_record(text) is None


def test_a_count_stands_in_for_spacing_times_its_walk():
    count = DiskCount(1, True, 1000.0, 2.0)
    assert count.fresh_at(1000.0) and count.fresh_at(1000.0 + diskcount.SPACING * 2.0 - 0.01)
    assert not count.fresh_at(1000.0 + diskcount.SPACING * 2.0)
    assert not count.fresh_at(999.0)  # a clock set back: count again
    slow = DiskCount(1, False, 1000.0, 10_000.0)
    assert slow.fresh_at(1000.0 + diskcount.LONGEST - 1) and not slow.fresh_at(1000.0 + diskcount.LONGEST)


def test_counted_remembers_a_count_until_it_is_stale(tree, record):
    first = diskcount.counted(record, str(tree), now=1000.0)
    assert first is not None and first.complete and first.bytes == rootfs.tree_size(str(tree))
    with open(record) as stream:
        assert diskcount.from_record(stream.read()) == first
    assert oct(os.stat(record).st_mode & 0o777) == "0o600"
    (tree / "d0" / "big").write_bytes(os.urandom(1 << 20))
    # Within its window the remembered count stands in: no walk.
    assert diskcount.counted(record, str(tree), now=first.counted_at) == first
    # Past it, a new walk sees the new file.
    later = diskcount.counted(record, str(tree), now=first.counted_at + diskcount.LONGEST)
    assert later is not None and later.bytes >= first.bytes + (1 << 20)
    assert later.bytes == rootfs.tree_size(str(tree))


def test_a_long_walk_is_remembered_longer(tree, record, monkeypatch):
    # A walk that took 2 s (the clock made to say so) stands in for 60 s.
    readings = [100.0]  # the walk's start; every later reading is 2 s on

    def clock() -> float:
        readings.append(102.0)
        return readings.pop(0)

    monkeypatch.setattr(diskcount.time, "monotonic", clock)
    first = diskcount.counted(record, str(tree), now=1000.0)
    assert (
        first is not None and first.took == pytest.approx(2.0) and first.counted_at == pytest.approx(1002.0)
    )
    monkeypatch.setattr(rootfs, "count_tree", lambda *args: pytest.fail("walked again"))
    assert diskcount.counted(record, str(tree), now=1002.0 + 59.0) == first


def test_a_walk_at_its_bound_gives_a_floor(tree, record, monkeypatch):
    monkeypatch.setattr(diskcount, "MOST_NAMES", 30)
    count = diskcount.counted(record, str(tree))
    assert count is not None and not count.complete
    assert 0 < count.bytes < rootfs.tree_size(str(tree))


def test_a_damaged_record_is_counted_again(tree, record):
    with open(record, "w") as stream:
        stream.write("999999999999 1 1e18 1e18\n")  # no real walk ended in the year 3e10
    count = diskcount.counted(record, str(tree), now=1000.0)
    assert count is not None and count.bytes == rootfs.tree_size(str(tree))


def test_a_record_behind_a_link_is_not_read(tree, record, tmp_path):
    planted = tmp_path / "planted"
    planted.write_text(DiskCount(7, True, 1000.0, 100.0).record())
    os.symlink(planted, record)
    count = diskcount.counted(record, str(tree), now=1001.0)
    assert count is not None and count.bytes == rootfs.tree_size(str(tree))
    assert not os.path.islink(record) and planted.read_text().startswith("7 ")


def test_no_rootfs_means_no_count(tmp_path, record):
    assert diskcount.counted(record, str(tmp_path / "missing")) is None
    assert not os.path.exists(record)


def test_forget_removes_the_record(tree, record):
    diskcount.counted(record, str(tree))
    diskcount.forget(record)
    assert not os.path.exists(record)
    diskcount.forget(record)  # twice is fine


def test_a_count_that_cannot_be_remembered_is_still_shown(tree, tmp_path):
    record = str(tmp_path / "no-such-directory" / "disk-ann.count")
    count = diskcount.counted(record, str(tree))
    assert count is not None and count.bytes == rootfs.tree_size(str(tree))
    assert not os.path.exists(record)
