"""treecopy: a rootfs copy by directory descriptors, on real files, with a tree that changes mid-walk."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from gpushell.containers import treecopy
from gpushell.core.errors import GpushellError

MIB = 1 << 20


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory the container must never reach: its secret must never be copied."""
    directory = tmp_path / "host"
    directory.mkdir()
    (directory / "shadow").write_text("root:$6$host-secret:19000:0:99999:7:::\n")
    return directory


def rootfs_tree(root: Path, outside: Path) -> None:
    """What a container's rootfs may hold, planted links included."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    os.chmod(root / "etc" / "passwd", 0o644)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "sudo").write_bytes(b"\x7fELF sudo")
    os.chown(root / "usr" / "bin" / "sudo", 0, 0)
    os.chmod(root / "usr" / "bin" / "sudo", 0o4755)
    home = root / "home" / "ann"
    home.mkdir(parents=True)
    os.chown(home, 1000, 1000)
    os.chmod(home, 0o700)
    (home / "notes").write_text("mine\n")
    os.chown(home / "notes", 1000, 1000)
    os.utime(home / "notes", ns=(1_000_000_000_123, 1_500_000_000_456))
    os.link(home / "notes", home / "notes-again")
    # Links are copied as links: the text, not what it names.
    os.symlink(str(outside / "shadow"), home / "shadow-link")
    os.symlink(str(outside), home / "host-dir-link")
    os.symlink("/", home / "root-link")
    os.symlink("notes", home / "relative")
    os.mkfifo(home / "pipe", 0o640)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(home / "socket"))
    with open(home / "sparse", "wb") as sparse:
        sparse.truncate(64 * MIB)  # all hole
        sparse.seek(32 * MIB)
        sparse.write(b"middle")
    os.setxattr(home / "notes", "user.origin", b"ann")
    locked = root / "root" / "locked"
    locked.mkdir(parents=True)
    (locked / "inside").write_text("root reads it anyway\n")
    os.chmod(locked, 0o000)


def test_a_copy_keeps_what_cp_a_keeps_and_follows_no_link(tmp_path, outside):
    source, target = tmp_path / "rootfs", tmp_path / "copy"
    rootfs_tree(source, outside)
    treecopy.copy_tree(str(source), str(target))
    home = target / "home" / "ann"
    assert (home / "notes").read_text() == "mine\n"
    assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (1000, 0o700)
    assert (home / "notes").stat().st_uid == 1000
    assert (home / "notes").stat().st_mtime_ns == 1_500_000_000_456
    assert os.getxattr(home / "notes", "user.origin") == b"ann"
    assert (home / "notes").stat().st_ino == (home / "notes-again").stat().st_ino
    assert stat.S_IMODE((target / "usr" / "bin" / "sudo").stat().st_mode) == 0o4755  # set-uid kept
    for name, text in (
        ("shadow-link", str(outside / "shadow")),
        ("host-dir-link", str(outside)),
        ("root-link", "/"),
        ("relative", "notes"),
    ):
        assert os.readlink(home / name) == text
    assert stat.S_ISFIFO((home / "pipe").lstat().st_mode)  # made, never opened (no hang)
    assert stat.S_IMODE((home / "pipe").lstat().st_mode) == 0o640
    assert stat.S_ISSOCK((home / "socket").lstat().st_mode)
    assert (home / "sparse").stat().st_size == 64 * MIB
    assert (home / "sparse").stat().st_blocks * 512 < MIB  # the holes stay holes
    with open(home / "sparse", "rb") as sparse:
        sparse.seek(32 * MIB)
        assert sparse.read(6) == b"middle"
    assert (target / "root" / "locked" / "inside").read_text() == "root reads it anyway\n"
    assert stat.S_IMODE((target / "root" / "locked").stat().st_mode) == 0o000
    copied = b"".join(
        path.read_bytes() for path in target.rglob("*") if path.is_file() and not path.is_symlink()
    )
    assert b"host-secret" not in copied


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_devices_are_made_anew_never_opened(tmp_path):
    source, target = tmp_path / "rootfs", tmp_path / "copy"
    (source / "dev").mkdir(parents=True)
    os.mknod(source / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(source / "dev" / "null", 0o666)  # past the umask
    os.mknod(source / "dev" / "disk", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    treecopy.copy_tree(str(source), str(target))
    null, disk = (target / "dev" / "null").lstat(), (target / "dev" / "disk").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(disk.st_mode) and disk.st_rdev == os.makedev(8, 0)


def swap_for_link(root: Path, victim: str, destination: str):
    """A hook that, once the walk has looked at root/victim, puts a link to destination in its place."""

    def hook(path: str, kind: str) -> None:
        if path == victim and kind == "dir":
            os.rename(root / victim, root / f"{victim}.moved")
            os.symlink(destination, root / victim)

    return hook


@pytest.mark.parametrize("destination", ["/", "HOST"])
def test_a_directory_swapped_for_a_link_mid_walk_aborts_the_copy(tmp_path, outside, destination):
    source, target = tmp_path / "rootfs", tmp_path / "copy"
    rootfs_tree(source, outside)
    hook = swap_for_link(source, "home/ann", str(outside) if destination == "HOST" else destination)
    with pytest.raises(treecopy.TreeChanged) as caught:
        treecopy.copy_tree(str(source), str(target), hook)
    assert "nothing was kept" in caught.value.user_message
    assert str(tmp_path) not in caught.value.user_message  # no host path for the student
    assert not (target / "home" / "ann" / "shadow").exists()
    assert not any(path.name == "shadow" for path in target.rglob("*"))


def test_a_directory_swapped_for_another_directory_aborts_the_copy(tmp_path, outside):
    source, target = tmp_path / "rootfs", tmp_path / "copy"
    rootfs_tree(source, outside)
    (source / "decoy").mkdir()

    def hook(path: str, kind: str) -> None:
        if path == "home":
            os.rename(source / "home", source / "home.old")
            os.rename(source / "decoy", source / "home")

    with pytest.raises(treecopy.TreeChanged):
        treecopy.copy_tree(str(source), str(target), hook)


def test_a_file_swapped_for_a_link_or_a_fifo_mid_walk_is_never_opened(tmp_path, outside):
    source, target = tmp_path / "rootfs", tmp_path / "copy"
    rootfs_tree(source, outside)
    notes = source / "home" / "ann" / "notes"

    def to_link(path: str, kind: str) -> None:
        if path == "home/ann/notes":
            os.unlink(notes)
            os.symlink(str(outside / "shadow"), notes)

    with pytest.raises(treecopy.TreeChanged):
        treecopy.copy_tree(str(source), str(target), to_link)

    def to_fifo(path: str, kind: str) -> None:
        if path == "home/ann/notes":
            os.unlink(notes)
            os.mkfifo(notes)  # opening it for reading would block the copy for ever

    notes.unlink()
    notes.write_text("mine\n")
    with pytest.raises(treecopy.TreeChanged):
        treecopy.copy_tree(str(source), str(tmp_path / "copy2"), to_fifo)


def test_a_too_deep_tree_is_refused_not_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(treecopy, "MAX_DEPTH", 5)
    source = tmp_path / "rootfs"
    (source / "a" / "b" / "c" / "d" / "e" / "f").mkdir(parents=True)
    with pytest.raises(GpushellError, match="nested more than 5 levels"):
        treecopy.copy_tree(str(source), str(tmp_path / "copy"))


def test_space_refusal_says_what_is_needed_and_what_is_free():
    assert treecopy.space_refusal(100 * MIB, 10 << 30, "a snapshot") is None
    why = treecopy.space_refusal(1 << 30, 512 * MIB, "a snapshot")
    assert why == "not enough disk space for a snapshot: needs 1.3 GiB, 512.0 MiB free"
    # The margin: a tree that only just fits is refused.
    assert treecopy.space_refusal(100 * MIB, 101 * MIB, "the restore") is not None


def test_check_space_names_no_path_for_the_student(tmp_path, monkeypatch):
    monkeypatch.setattr(treecopy, "free_bytes", lambda path: 10 * MIB)
    with pytest.raises(GpushellError) as caught:
        treecopy.check_space(str(tmp_path), 50 * MIB, "a snapshot")
    assert str(tmp_path) not in caught.value.user_message
    assert str(tmp_path) in caught.value.log_message
