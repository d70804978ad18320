"""snapshots: copies of a container's rootfs on real files, with a fake container driver."""

from __future__ import annotations

import calendar
import errno
import ipaddress
import os
import stat

import pytest

from gpushell.containers import snapshots, treecopy
from gpushell.core.errors import ExitStatus, GpushellError
from gpushell.core.model import Registry, User
from gpushell.system import rootfs
from tests.fakes import FakeBackend

NOW = calendar.timegm((2025, 1, 2, 3, 4, 5))


def make_user(name: str, index: int, limit: int = 3) -> User:
    ip = ipaddress.IPv4Address(f"10.0.3.{index + 2}")
    return User(name, 22001 + index, ip, 1065536 * (index + 1), f"c-{name}", "none", (), snapshot_limit=limit)


def make_registry(lxcpath: str, *users: User) -> Registry:
    return Registry(
        "/etc/gpushell.yaml", "gpu1", "lxcbr0", ipaddress.IPv4Network("10.0.3.0/24"), (22001, 22999),
        "tpl", lxcpath, "GPUSHELL", 1000000, 65536, "none", (), 60.0, 3600, True,
        {user.name: user for user in users},
    )  # fmt: skip


def make_rootfs(root) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("c-ann\n")
    home = root / "home" / "ann"
    home.mkdir(parents=True)
    (home / "notes.txt").write_text("version 1\n")
    (home / "big").write_bytes(b"x" * 65536)
    os.link(home / "big", home / "big-hardlink")
    # A link the container planted: copied as a link, never followed.
    os.symlink("/etc/shadow", home / "evil")
    os.chown(home / "notes.txt", 1000, 1000)


@pytest.fixture
def lab(tmp_path):
    lxcpath = tmp_path / "lxc"
    ann, bob = make_user("ann", 0), make_user("bob", 1)
    for user in (ann, bob):
        make_rootfs(lxcpath / user.container / "rootfs")
    return make_registry(str(lxcpath), ann, bob), ann, bob


def live(reg: Registry, user: User):
    from pathlib import Path

    return Path(reg.lxcpath) / user.container / "rootfs"


def record_copies(monkeypatch, driver: FakeBackend) -> None:
    real = treecopy.copy_tree

    def copy(source: str, target: str) -> None:
        driver.calls.append("copy")
        real(source, target)

    monkeypatch.setattr(treecopy, "copy_tree", copy)


def test_snapshot_of_a_stopped_container_copies_it_as_it_is(lab):
    reg, ann, _bob = lab
    driver = FakeBackend()
    made = snapshots.create(reg, ann, driver, None, now=NOW)
    assert made == snapshots.Snapshot("snap-20250102-030405", NOW, made.size, False)
    assert snapshots.list_snapshots(reg, ann) == [made]
    copy = live(reg, ann).parent / "gpushell-snapshots" / made.name / "rootfs"
    assert (copy / "home" / "ann" / "notes.txt").read_text() == "version 1\n"
    assert (copy / "home" / "ann" / "notes.txt").stat().st_uid == 1000
    assert os.readlink(copy / "home" / "ann" / "evil") == "/etc/shadow"
    assert (copy / "home" / "ann" / "big").stat().st_ino == (
        copy / "home" / "ann" / "big-hardlink"
    ).stat().st_ino
    # Root's alone: the copy holds the container's files with their ids.
    assert stat.S_IMODE(copy.parent.parent.stat().st_mode) == 0o700
    assert made.size == rootfs.tree_size(str(copy))
    assert 65536 <= made.size < 2 * 65536 + 64 * 4096  # the hard link counted once
    # Stopped: nothing frozen, no start possible while it was copied.
    assert driver.calls == [f"block-start {ann.container}", f"unblock-start {ann.container}"]


def test_snapshot_of_a_running_container_is_taken_frozen(lab, monkeypatch):
    reg, ann, _bob = lab
    driver = FakeBackend({ann.container: "RUNNING"})
    record_copies(monkeypatch, driver)
    made = snapshots.create(reg, ann, driver, "before-upgrade", now=NOW)
    assert made.running and made.name == "before-upgrade"
    assert driver.calls == [f"freeze {ann.container}", "copy", f"unfreeze {ann.container}"]
    assert driver.states[ann.container] == "RUNNING"


def test_a_failed_copy_unfreezes_and_leaves_nothing_listed(lab, monkeypatch):
    reg, ann, _bob = lab
    driver = FakeBackend({ann.container: "RUNNING"})

    def half_copy(source: str, target: str) -> None:
        os.makedirs(os.path.join(target, "etc"))  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", f"{target}/etc/passwd")

    monkeypatch.setattr(treecopy, "copy_tree", half_copy)
    with pytest.raises(GpushellError) as caught:
        snapshots.create(reg, ann, driver, "first", now=NOW)
    assert caught.value.user_message == "not enough disk space for a snapshot; nothing was kept"
    assert reg.lxcpath in caught.value.log_message
    assert driver.calls[-1] == f"unfreeze {ann.container}"
    assert snapshots.list_snapshots(reg, ann) == []
    assert os.listdir(live(reg, ann).parent / "gpushell-snapshots") == []


def test_a_killed_copy_never_lists_and_is_cleared_by_the_next_snapshot(lab):
    reg, ann, _bob = lab
    directory = live(reg, ann).parent / "gpushell-snapshots"
    # What a SIGKILL mid-copy leaves: a staging directory, no info.
    (directory / ".first.abc123" / "rootfs" / "etc").mkdir(parents=True)
    # And a directory with a valid name but no info (never ours).
    (directory / "second" / "rootfs").mkdir(parents=True)
    assert snapshots.list_snapshots(reg, ann) == []
    snapshots.create(reg, ann, FakeBackend(), "first", now=NOW)
    assert [snap.name for snap in snapshots.list_snapshots(reg, ann)] == ["first"]
    assert ".first.abc123" not in os.listdir(directory)


def test_limit_is_enforced_with_a_clear_message(lab):
    reg, _ann, _bob = lab
    ann = make_user("ann", 0, limit=2)
    driver = FakeBackend()
    snapshots.create(reg, ann, driver, "a", now=NOW)
    snapshots.create(reg, ann, driver, "b", now=NOW + 1)
    with pytest.raises(GpushellError) as refused:
        snapshots.create(reg, ann, driver, "c", now=NOW + 2)
    assert refused.value.user_message == (
        "you have 2 snapshots, your limit; delete one first: delete-snapshot NAME"
    )
    assert [snap.name for snap in snapshots.list_snapshots(reg, ann)] == ["a", "b"]
    snapshots.delete(reg, ann, "a")
    snapshots.create(reg, ann, driver, "c", now=NOW + 3)
    assert [snap.name for snap in snapshots.list_snapshots(reg, ann)] == ["b", "c"]


def test_limit_zero_turns_snapshots_off(lab):
    reg, _ann, _bob = lab
    off = make_user("ann", 0, limit=0)
    with pytest.raises(GpushellError, match="turned off for you"):
        snapshots.create(reg, off, FakeBackend(), "a", now=NOW)
    assert not (live(reg, off).parent / "gpushell-snapshots").exists()


def test_an_existing_name_is_refused(lab):
    reg, ann, _bob = lab
    snapshots.create(reg, ann, FakeBackend(), "same", now=NOW)
    with pytest.raises(GpushellError, match="already have a snapshot named same"):
        snapshots.create(reg, ann, FakeBackend(), "same", now=NOW + 5)
    # The automatic name of the same second is taken too.
    snapshots.create(reg, ann, FakeBackend(), None, now=NOW)
    with pytest.raises(GpushellError, match="already have"):
        snapshots.create(reg, ann, FakeBackend(), None, now=NOW)


@pytest.mark.parametrize("name", ["", "../x", "a/b", "Upper", "-dash", "x" * 33, ".hidden", "a b"])
def test_bad_names_are_refused_everywhere(lab, name):
    reg, ann, _bob = lab
    driver = FakeBackend()
    for action in (
        lambda: snapshots.create(reg, ann, driver, name, now=NOW),
        lambda: snapshots.restore(reg, ann, driver, name),
        lambda: snapshots.delete(reg, ann, name),
    ):
        with pytest.raises(GpushellError, match="snapshot name is 1-32"):
            action()
    assert driver.calls == []


def test_list_is_oldest_first(lab):
    reg, ann, _bob = lab
    for name, when in (("zeta", NOW), ("alpha", NOW + 60), ("mid", NOW + 30)):
        snapshots.create(reg, ann, FakeBackend(), name, now=when)
    assert [snap.name for snap in snapshots.list_snapshots(reg, ann)] == ["zeta", "mid", "alpha"]


def test_restore_of_a_stopped_container_puts_the_old_files_back(lab, monkeypatch):
    reg, ann, _bob = lab
    driver = FakeBackend()
    snapshots.create(reg, ann, driver, "v1", now=NOW)
    notes = live(reg, ann) / "home" / "ann" / "notes.txt"
    notes.write_text("version 2\n")
    (live(reg, ann) / "home" / "ann" / "new-file").write_text("made after\n")
    record_copies(monkeypatch, driver)
    driver.calls.clear()
    assert snapshots.restore(reg, ann, driver, "v1") is False
    assert notes.read_text() == "version 1\n"
    assert not (live(reg, ann) / "home" / "ann" / "new-file").exists()
    assert driver.calls == ["copy", f"block-start {ann.container}", f"unblock-start {ann.container}"]
    assert sorted(os.listdir(live(reg, ann).parent)) == ["gpushell-snapshots", "rootfs"]
    # The snapshot itself is still there, unchanged, for another restore.
    assert [snap.name for snap in snapshots.list_snapshots(reg, ann)] == ["v1"]


def test_restore_of_a_running_container_copies_first_then_stops_swaps_starts(lab, monkeypatch):
    reg, ann, _bob = lab
    driver = FakeBackend({ann.container: "RUNNING"})
    snapshots.create(reg, ann, driver, "v1", now=NOW)
    (live(reg, ann) / "home" / "ann" / "notes.txt").write_text("version 2\n")
    driver.calls.clear()
    record_copies(monkeypatch, driver)
    assert snapshots.restore(reg, ann, driver, "v1") is True
    assert driver.calls == [
        "copy", f"stop {ann.container}", f"block-start {ann.container}", f"unblock-start {ann.container}",
        f"start {ann.container}",
    ]  # fmt: skip
    assert (live(reg, ann) / "home" / "ann" / "notes.txt").read_text() == "version 1\n"


def test_a_failed_restore_keeps_the_current_rootfs_and_starts_it_again(lab, monkeypatch):
    reg, ann, _bob = lab
    driver = FakeBackend({ann.container: "RUNNING"})
    snapshots.create(reg, ann, driver, "v1", now=NOW)
    (live(reg, ann) / "home" / "ann" / "notes.txt").write_text("version 2\n")

    def broken_swap(directory: str, *_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshots, "swap", broken_swap)
    with pytest.raises(OSError):
        snapshots.restore(reg, ann, driver, "v1")
    assert (live(reg, ann) / "home" / "ann" / "notes.txt").read_text() == "version 2\n"
    assert driver.states[ann.container] == "RUNNING"
    assert sorted(os.listdir(live(reg, ann).parent)) == ["gpushell-snapshots", "rootfs"]


def test_another_students_snapshot_name_is_unknown(lab):
    reg, ann, bob = lab
    snapshots.create(reg, ann, FakeBackend(), "anns-work", now=NOW)
    driver = FakeBackend()
    for action in (
        lambda: snapshots.restore(reg, bob, driver, "anns-work"),
        lambda: snapshots.delete(reg, bob, "anns-work"),
    ):
        with pytest.raises(GpushellError) as unknown:
            action()
        assert unknown.value.user_message == "no snapshot anns-work; see: snapshots"
    assert [snap.name for snap in snapshots.list_snapshots(reg, ann)] == ["anns-work"]
    assert driver.calls == []


def test_delete_removes_it_and_unknown_names_are_refused(lab):
    reg, ann, _bob = lab
    snapshots.create(reg, ann, FakeBackend(), "old", now=NOW)
    snapshots.delete(reg, ann, "old")
    assert snapshots.list_snapshots(reg, ann) == []
    assert os.listdir(live(reg, ann).parent / "gpushell-snapshots") == []
    with pytest.raises(GpushellError, match="no snapshot old; see: snapshots"):
        snapshots.delete(reg, ann, "old")


def test_a_missing_container_is_said_so(lab):
    reg, _ann, _bob = lab
    ghost = make_user("cat", 2)
    with pytest.raises(GpushellError, match="does not exist"):
        snapshots.create(reg, ghost, FakeBackend(), "x", now=NOW)


def test_info_round_trip_and_junk():
    snap = snapshots.Snapshot("x", NOW, 123, True)
    assert snapshots.parse_info("x", snapshots.format_info(snap)) == snap
    assert snapshots.parse_info("x", "created=1\nsize=-5\nrunning=0\n") is None
    assert snapshots.parse_info("x", "") is None


# --- the swap and its recovery ---------------------------------------------------


def container(tmp_path):
    directory = tmp_path / "c"
    for name, text in (("rootfs", "current"), ("rootfs.new", "new")):
        (directory / name / "home" / "ann").mkdir(parents=True)
        (directory / name / "which").write_text(text)
    return directory


def test_swap_replaces_the_rootfs_and_drops_the_old_one(tmp_path):
    directory = container(tmp_path)
    snapshots.swap(str(directory))
    assert (directory / "rootfs" / "which").read_text() == "new"
    assert sorted(os.listdir(directory)) == ["rootfs"]


def test_settle_finishes_a_swap_killed_between_its_renames(tmp_path):
    directory = container(tmp_path)
    os.rename(directory / "rootfs", directory / "rootfs.old")
    snapshots.settle(str(directory))
    assert (directory / "rootfs" / "which").read_text() == "new"
    assert sorted(os.listdir(directory)) == ["rootfs"]


def test_settle_drops_an_abandoned_copy(tmp_path):
    directory = container(tmp_path)
    snapshots.settle(str(directory))
    assert (directory / "rootfs" / "which").read_text() == "current"
    assert sorted(os.listdir(directory)) == ["rootfs"]


def test_settle_gives_a_moved_home_back_before_dropping_the_copy(tmp_path):
    directory = container(tmp_path)
    (directory / "rootfs" / "home" / "ann" / "thesis.tex").write_text("years of work\n")
    (directory / snapshots.HOLDS_HOME).write_text("home/ann\n")
    # Killed right after moving the home into rootfs.new, before the swap.
    os.rename(directory / "rootfs.new" / "home" / "ann", tmp_path / "fresh-home")
    os.rename(directory / "rootfs" / "home" / "ann", directory / "rootfs.new" / "home" / "ann")
    snapshots.settle(str(directory))
    assert (directory / "rootfs" / "home" / "ann" / "thesis.tex").read_text() == "years of work\n"
    assert (directory / "rootfs" / "which").read_text() == "current"
    assert sorted(os.listdir(directory)) == ["rootfs"]


def test_settle_leaves_a_healthy_container_alone(tmp_path):
    directory = tmp_path / "c"
    (directory / "rootfs").mkdir(parents=True)
    snapshots.settle(str(directory))
    snapshots.settle(str(tmp_path / "missing"))
    assert os.listdir(directory) == ["rootfs"]


def test_refusals_are_errors_the_helper_shows_the_student(lab):
    reg, _ann, _bob = lab
    with pytest.raises(GpushellError) as refused:
        snapshots.create(reg, make_user("ann", 0, limit=0), FakeBackend(), "a", now=NOW)
    assert refused.value.status == ExitStatus.ERROR
    with pytest.raises(GpushellError) as unknown:
        snapshots.delete(reg, make_user("ann", 0), "nothing")
    assert unknown.value.status == ExitStatus.ERROR


# --- the driver's freeze and unfreeze ----------------------------------------------------


@pytest.mark.parametrize(("verb", "tool"), [("freeze", "lxc-freeze"), ("unfreeze", "lxc-unfreeze")])
def test_lxc_driver_freezes_through_lxc_tools(monkeypatch, verb, tool):
    from gpushell.containers import lxc
    from gpushell.system.runner import Result

    calls = []
    answers = iter([0, 1])

    def fake(argv, **kwargs):
        calls.append(list(argv))
        return Result(next(answers), "", "it broke")

    monkeypatch.setattr(lxc, "run", fake)
    driver = lxc.LxcDriver("/var/lib/gpushell")
    getattr(driver, verb)("c-ann")
    assert calls == [[tool, "-P", "/var/lib/gpushell", "-n", "c-ann"]]
    with pytest.raises(GpushellError) as failed:
        getattr(driver, verb)("c-ann")
    assert "it broke" in failed.value.log_message
    assert failed.value.user_message.startswith("your container could not be")


def test_a_restart_during_the_copy_discards_the_snapshot(lab, monkeypatch):
    """Frozen, verified, copied; then the container shows another init: nothing is kept."""
    reg, ann, _bob = lab
    driver = FakeBackend({ann.container: "RUNNING"})
    real = treecopy.copy_tree

    def copy_while_it_restarts(source: str, target: str) -> None:
        real(source, target)
        driver.info = lambda name: ("RUNNING", 9999)  # type: ignore[method-assign]

    monkeypatch.setattr(treecopy, "copy_tree", copy_while_it_restarts)
    with pytest.raises(GpushellError) as caught:
        snapshots.create(reg, ann, driver, "torn", now=NOW)
    assert (
        caught.value.user_message
        == "your container restarted during the snapshot; nothing was kept; try again"
    )
    assert snapshots.list_snapshots(reg, ann) == []
    assert os.listdir(live(reg, ann).parent / "gpushell-snapshots") == []


def test_a_snapshot_that_will_not_fit_is_refused_before_anything_is_frozen(lab, monkeypatch):
    reg, ann, _bob = lab
    driver = FakeBackend({ann.container: "RUNNING"})
    monkeypatch.setattr(treecopy, "free_bytes", lambda path: 1 << 20)
    with pytest.raises(GpushellError) as caught:
        snapshots.create(reg, ann, driver, "big", now=NOW)
    assert caught.value.user_message.startswith("not enough disk space for a snapshot: needs ")
    assert caught.value.user_message.endswith(", 1.0 MiB free")
    assert driver.calls == []
    assert snapshots.list_snapshots(reg, ann) == []


def test_a_restore_that_will_not_fit_changes_nothing(lab, monkeypatch):
    reg, ann, _bob = lab
    driver = FakeBackend({ann.container: "RUNNING"})
    snapshots.create(reg, ann, driver, "v1", now=NOW)
    driver.calls.clear()
    monkeypatch.setattr(treecopy, "free_bytes", lambda path: 1 << 20)
    with pytest.raises(GpushellError, match="not enough disk space for the restore: needs "):
        snapshots.restore(reg, ann, driver, "v1")
    assert driver.calls == []
    assert sorted(os.listdir(live(reg, ann).parent)) == ["gpushell-snapshots", "rootfs"]


def test_a_container_started_before_the_swap_keeps_its_rootfs(lab):
    """Something started it between the stop and the swap: the swap is refused, the copy dropped."""
    reg, ann, _bob = lab
    driver = FakeBackend()
    snapshots.create(reg, ann, driver, "v1", now=NOW)
    (live(reg, ann) / "home" / "ann" / "notes.txt").write_text("version 2\n")
    driver.stop = lambda name: driver.states.__setitem__(name, "RUNNING")  # type: ignore[method-assign]
    driver.states[ann.container] = "RUNNING"
    with pytest.raises(GpushellError, match="your container is running; try the restore again"):
        snapshots.restore(reg, ann, driver, "v1")
    assert (live(reg, ann) / "home" / "ann" / "notes.txt").read_text() == "version 2\n"
    assert sorted(os.listdir(live(reg, ann).parent)) == ["gpushell-snapshots", "rootfs"]
