"""btrfs storage's pure parts: quota group ids, `btrfs` output (recorded here), mountinfo, removal order."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushell.containers import btrfs, storage
from gpushell.containers.dirstorage import DirStorage
from gpushell.core.errors import GpushellError
from gpushell.core.registry import parse
from gpushell.system.runner import Result

DATA = Path(__file__).parent.parent / "data"


def test_the_quota_group_is_level_one_named_after_the_container_directorys_subvolume():
    assert btrfs.quota_group(257) == "1/257"


def test_qgroup_show_gives_each_groups_bytes_limit_and_members():
    groups = btrfs.parse_qgroups((DATA / "btrfs_qgroup_show.txt").read_text())
    assert set(groups) == {"0/5", "0/256", "0/257", "0/258", "0/259", "1/257"}
    container = groups["1/257"]
    assert (container.referenced, container.exclusive, container.max_exclusive) == (
        4227072,
        32768,
        50 * 2**30,
    )
    assert container.children == ("0/257", "0/258", "0/259")
    assert groups["0/259"].parents == ("1/257",) and groups["0/259"].exclusive == 16384
    assert groups["0/256"].parents == () and groups["0/256"].max_exclusive is None


def test_qgroup_lines_that_are_not_rows_are_skipped():
    assert btrfs.parse_qgroups("Qgroupid Referenced\n-------- ---\nWARNING: inconsistent\n0/5 x y\n") == {}


def test_subvolume_list_gives_parents_and_a_forged_line_is_refused():
    text = (DATA / "btrfs_subvolume_list.txt").read_text()
    parents = btrfs.parse_subvolume_parents(text)
    assert parents == {256: 5, 257: 5, 258: 257, 259: 257}
    # A name with a newline in it, made to look like another container's subvolume under ours.
    forged = text + (
        "ID 300 gen 12 parent 258 top level 258 path alice/rootfs/x\n"
        "ID 256 gen 1 parent 258 top level 1 path y\n"
    )
    with pytest.raises(btrfs.BtrfsError):
        btrfs.parse_subvolume_parents(forged)


def test_descendants_come_deepest_first_and_only_below_the_top():
    parents = {256: 5, 257: 5, 258: 257, 259: 257, 260: 258, 261: 260, 262: 256}
    order = btrfs.descendants(parents, 257)
    assert set(order) == {258, 259, 260, 261}
    assert order.index(261) < order.index(260) < order.index(258)
    assert btrfs.descendants(parents, 259) == []


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 7:0 / /var/lib/lxc rw,relatime shared:20 - btrfs /dev/loop0 rw,space_cache=v2,subvolid=5,subvol=/
41 22 7:1 / /srv/with\\040space rw,relatime - btrfs /dev/loop1 rw
42 40 0:50 / /var/lib/lxc/tmpfs rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/var/lib/lxc", "btrfs"),
        ("/var/lib/lxc/alice/rootfs", "btrfs"),
        ("/var/lib/lxcfoo", "ext4"),
        ("/var/lib/lxc/tmpfs/x", "tmpfs"),
        ("/srv/with space/lab", "btrfs"),
        ("/home", "ext4"),
    ],
)
def test_the_mount_holding_a_path_names_its_filesystem(path: str, kind: str):
    assert btrfs.mount_fstype(MOUNTINFO, path) == kind


def test_a_btrfs_registry_on_another_filesystem_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(btrfs, "is_btrfs", lambda path: False)
    reg = parse(f"storage: btrfs\nlxcpath: {tmp_path}/lxc\n", "/r")  # parsing never looks at the disk
    with pytest.raises(btrfs.GpushellError) as caught:
        storage.check_supported(reg)
    assert caught.value.user_message.startswith(f"storage: btrfs needs the lxcpath {tmp_path}/lxc on a btrfs")
    assert "\n" not in caught.value.user_message
    storage.check_supported(parse(f"lxcpath: {tmp_path}/lxc\n", "/r"))  # dir: anything goes


def test_the_registry_picks_the_storage_kind(tmp_path):
    assert isinstance(storage.for_registry(parse(f"lxcpath: {tmp_path}\n", "/r")), DirStorage)
    chosen = storage.for_registry(parse(f"storage: btrfs\nlxcpath: {tmp_path}\n", "/r"))
    assert isinstance(chosen, btrfs.BtrfsStorage) and chosen.has_quota


def test_dir_storage_has_no_quota_and_removes_trees_without_following_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host file")
    tree = tmp_path / "c" / "rootfs"
    tree.mkdir(parents=True)
    (tree / "link").symlink_to(outside)
    copies = DirStorage()
    copies.set_quota(str(tmp_path / "c"), 2**30)  # nothing to hold on plain directories
    assert copies.snapshot_sizes(str(tmp_path / "c"), {"s": str(tree)}) == {}
    assert copies.disk_used(str(tmp_path / "c")) is None  # nothing held: usage counts the tree (diskcount)
    copies.remove(str(tmp_path / "c"))
    assert not (tmp_path / "c").exists() and (outside / "keep").read_text() == "host file"


def recorded_btrfs(monkeypatch, calls: list[tuple[str, ...]], copy=None) -> btrfs.BtrfsStorage:
    """A BtrfsStorage whose `btrfs` calls are recorded (subvolume create makes a plain directory)."""

    def fake(*args: str, check: bool = True, timeout: float = 300.0) -> str:
        calls.append(args)
        if args[:2] == ("subvolume", "create"):
            Path(args[-1]).mkdir()
        return ""

    monkeypatch.setattr(btrfs, "btrfs", fake)
    monkeypatch.setattr(btrfs.treecopy, "copy_tree", copy or (lambda source, target, target_made: None))
    monkeypatch.setattr(btrfs.BtrfsStorage, "_inherit", lambda self, target: [])
    return btrfs.BtrfsStorage("/nonexistent")


@pytest.mark.parametrize("readonly", [True, False])
def test_a_tree_made_a_subvolume_is_read_only_when_asked_once_full(tmp_path, monkeypatch, readonly):
    calls: list[tuple[str, ...]] = []
    target = str(tmp_path / "rootfs")
    recorded_btrfs(monkeypatch, calls).tree_to_subvolume(str(tmp_path), target, "a snapshot", readonly)
    made = [("subvolume", "create", target)]
    assert calls == made + ([("property", "set", "-ts", target, "ro", "true")] if readonly else [])


def test_a_failed_copy_into_a_subvolume_leaves_nothing_and_is_never_made_read_only(tmp_path, monkeypatch):
    def full(source: str, target: str, target_made: bool) -> None:
        raise OSError(28, "No space left on device")

    calls: list[tuple[str, ...]] = []
    store = recorded_btrfs(monkeypatch, calls, full)
    with pytest.raises(GpushellError, match="not enough disk space for a snapshot"):
        store.tree_to_subvolume(str(tmp_path), str(tmp_path / "rootfs"), "a snapshot", readonly=True)
    assert not (tmp_path / "rootfs").exists()
    assert not any(call[0] == "property" for call in calls)


def test_btrfs_asks_room_only_for_a_copy_that_takes_it(tmp_path, monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(btrfs.treecopy, "free_bytes", lambda path: 0)
    store = btrfs.BtrfsStorage(str(tmp_path))
    store.check_space(str(tmp_path), lambda: asked.append("size") or 1, "a snapshot")  # type: ignore[func-returns-value]
    assert asked == []  # a snapshot takes no room when made: its size is never even walked
    with pytest.raises(GpushellError, match="not enough disk space for moving ann: needs"):
        store.check_space(str(tmp_path), lambda: 2**30, "moving ann", copied=True)


def rescans_run(monkeypatch, stderr: str, busy: bool = False) -> list[list[str]]:
    """The `btrfs quota rescan` calls settle_counts makes (through run and btrfs), in order."""
    calls: list[list[str]] = []

    def fake_run(argv: list[str], check: bool = True, **_: object) -> Result:
        calls.append(argv)
        if argv[1:3] == ["qgroup", "show"]:
            return Result(0, "", stderr)
        return Result(1 if busy and len(calls) == 2 else 0, "", "")

    monkeypatch.setattr(btrfs, "run", fake_run)
    monkeypatch.setattr(btrfs, "btrfs", lambda *args, **_: calls.append(["btrfs", *args]) or "")
    return calls


INCONSISTENT = "WARNING: qgroup data inconsistent, rescan recommended\n"


@pytest.mark.parametrize("wait", [False, True])
def test_inconsistent_counts_start_a_rescan_waited_for_only_when_asked(monkeypatch, wait):
    calls = rescans_run(monkeypatch, INCONSISTENT)
    btrfs.BtrfsStorage("/pool").settle_counts(wait=wait)
    assert calls[1:] == [["btrfs", "quota", "rescan", *(["-w"] if wait else []), "/pool"]]


def test_a_rescan_already_running_is_waited_for_then_started_again(monkeypatch):
    calls = rescans_run(monkeypatch, INCONSISTENT, busy=True)
    btrfs.BtrfsStorage("/pool").settle_counts()
    assert calls[1:] == [
        ["btrfs", "quota", "rescan", "/pool"],
        ["btrfs", "quota", "rescan", "-W", "/pool"],
        ["btrfs", "quota", "rescan", "/pool"],
    ]


def test_consistent_counts_start_nothing_and_a_reader_waits_for_a_running_rescan(monkeypatch):
    calls = rescans_run(monkeypatch, "")
    btrfs.BtrfsStorage("/pool").settle_counts()
    assert calls == [["btrfs", "qgroup", "show", "--raw", "/pool"]]
    calls.clear()
    btrfs.BtrfsStorage("/pool").settle_counts(wait=True)
    assert calls[1:] == [["btrfs", "quota", "rescan", "-W", "/pool"]]
