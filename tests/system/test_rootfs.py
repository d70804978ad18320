"""rootfs: writes inside a container's rootfs that never follow its links."""

from __future__ import annotations

import io
import os
import stat

import pytest

from gpushell.core.errors import GpushellError
from gpushell.system.rootfs import CHUNK, make_dir, remove_file, write_file


@pytest.fixture
def root(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "home" / "alice").mkdir(parents=True)
    return rootfs


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "authorized_keys").write_text("host file\n")
    return directory


def listing(path):
    return sorted(os.listdir(path))


def test_write_file_creates_with_mode(root):
    write_file(str(root), "/home/alice/notes.txt", "hello\n", 0o600, (0, 0))
    target = root / "home" / "alice" / "notes.txt"
    assert target.read_text() == "hello\n"
    info = target.lstat()
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (0, 0)
    assert listing(root / "home" / "alice") == ["notes.txt"]


def test_write_file_default_mode_and_bytes(root):
    write_file(str(root), "etc-file", b"\x00\x01binary")
    target = root / "etc-file"
    assert target.read_bytes() == b"\x00\x01binary"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_file_owner(root):
    write_file(str(root), "home/alice/owned", "x", 0o640, (1000, 1001))
    info = (root / "home" / "alice" / "owned").stat()
    assert (info.st_uid, info.st_gid) == (1000, 1001)
    assert stat.S_IMODE(info.st_mode) == 0o640


def test_write_file_replaces_and_changes_mode(root):
    target = root / "home" / "alice" / "f"
    target.write_text("old content that is longer\n")
    os.chmod(target, 0o666)
    inode = target.stat().st_ino
    write_file(str(root), "home/alice/f", "new\n", 0o600)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert listing(root / "home" / "alice") == ["f"]


def test_write_file_removes_stale_temporary(root):
    stale = root / "home" / "alice" / ".f.gpushell-tmp"
    stale.write_text("left over by a crash")
    write_file(str(root), "home/alice/f", "new\n")
    assert listing(root / "home" / "alice") == ["f"]
    assert (root / "home" / "alice" / "f").read_text() == "new\n"


def test_write_file_missing_directory(root):
    with pytest.raises(FileNotFoundError):
        write_file(str(root), "home/bob/.ssh/authorized_keys", "k\n")
    assert not (root / "home" / "bob").exists()


def test_write_file_create_dirs(root):
    write_file(str(root), "etc/systemd/journald.conf.d/gpushell.conf", "[Journal]\n", create_dirs=0o755)
    directory = root / "etc" / "systemd" / "journald.conf.d"
    assert stat.S_IMODE(directory.stat().st_mode) & 0o700 == 0o700
    assert (directory / "gpushell.conf").read_text() == "[Journal]\n"


def test_symlinked_directory_is_refused(root, outside):
    (root / "home" / "alice" / ".ssh").symlink_to(outside)
    with pytest.raises(GpushellError) as info:
        write_file(str(root), "home/alice/.ssh/authorized_keys", "attacker\n", 0o600, (0, 0))
    assert info.value.user_message == "refusing to follow a link inside the container"
    assert info.value.log_message == f"{root}/home/alice/.ssh: .ssh is a link or not a directory"
    assert (outside / "authorized_keys").read_text() == "host file\n"
    assert listing(outside) == ["authorized_keys"]


def test_symlinked_directory_refused_with_create_dirs(root, outside):
    (root / "home" / "alice" / ".ssh").symlink_to(outside)
    with pytest.raises(GpushellError):
        write_file(str(root), "home/alice/.ssh/authorized_keys", "attacker\n", create_dirs=0o700)
    assert listing(outside) == ["authorized_keys"]
    assert (outside / "authorized_keys").read_text() == "host file\n"


def test_symlink_high_in_the_path_is_refused(root, outside):
    (root / "home" / "alice").rmdir()
    (outside / "alice").mkdir()
    (root / "home" / "alice").symlink_to(outside / "alice")
    with pytest.raises(GpushellError):
        write_file(str(root), "home/alice/x", "data")
    assert listing(outside / "alice") == []


def test_file_where_directory_expected_is_refused(root):
    (root / "home" / "alice" / ".ssh").write_text("a file")
    with pytest.raises(GpushellError):
        write_file(str(root), "home/alice/.ssh/authorized_keys", "k\n")


def test_symlink_at_final_name_is_replaced(root, outside):
    link = root / "home" / "alice" / "authorized_keys"
    link.symlink_to(outside / "authorized_keys")
    write_file(str(root), "home/alice/authorized_keys", "student key\n", 0o600)
    assert not link.is_symlink()
    assert stat.S_ISREG(link.lstat().st_mode)
    assert link.read_text() == "student key\n"
    assert (outside / "authorized_keys").read_text() == "host file\n"


@pytest.mark.parametrize("path", ["home/../etc/passwd", "home/./alice/x", "../x/y"])
def test_dot_components_refused(root, path):
    with pytest.raises(GpushellError) as info:
        write_file(str(root), path, "x")
    assert info.value.user_message.startswith("refusing path component ")


def test_rootfs_itself_a_link_is_refused(tmp_path, root):
    link = tmp_path / "link"
    link.symlink_to(root)
    with pytest.raises(OSError):
        write_file(str(link), "x", "data")
    assert not (root / "x").exists()


def test_make_dir(root):
    make_dir(str(root), "home/alice/.ssh", 0o700, (1000, 1000))
    info = (root / "home" / "alice" / ".ssh").lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (info.st_uid, info.st_gid) == (1000, 1000)


def test_make_dir_existing_fixes_mode_and_owner(root):
    directory = root / "home" / "alice" / ".ssh"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    make_dir(str(root), "/home/alice/.ssh/", 0o700, (0, 0))
    info = directory.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (info.st_uid, info.st_gid) == (0, 0)


def test_make_dir_refuses_link(root, outside):
    (root / "home" / "alice" / ".ssh").symlink_to(outside)
    mode = stat.S_IMODE(outside.stat().st_mode)
    with pytest.raises(GpushellError):
        make_dir(str(root), "home/alice/.ssh", 0o777, (1000, 1000))
    assert stat.S_IMODE(outside.stat().st_mode) == mode
    assert outside.stat().st_uid == 0


def test_make_dir_refuses_link_in_parent(root, outside):
    (root / "home" / "alice").rmdir()
    (root / "home" / "alice").symlink_to(outside)
    with pytest.raises(GpushellError):
        make_dir(str(root), "home/alice/.ssh", 0o700, (0, 0))
    assert listing(outside) == ["authorized_keys"]


def test_remove_file(root, outside):
    target = root / "home" / "alice" / "f"
    target.write_text("x")
    remove_file(str(root), "home/alice/f")
    assert not target.exists()
    remove_file(str(root), "home/alice/f")  # already gone: fine
    (root / "home" / "alice" / "link").symlink_to(outside / "authorized_keys")
    remove_file(str(root), "home/alice/link")
    assert (outside / "authorized_keys").read_text() == "host file\n"
    (root / "home" / "alice" / ".ssh").symlink_to(outside)
    with pytest.raises(GpushellError):
        remove_file(str(root), "home/alice/.ssh/authorized_keys")
    assert listing(outside) == ["authorized_keys"]


def test_write_file_copies_a_stream_in_chunks(root):
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)  # three chunks and a bit
    reads: list[int] = []

    class Source(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(-1 if size is None else size)
            return super().read(size)

    write_file(str(root), "home/alice/big", Source(data), 0o600)
    assert (root / "home" / "alice" / "big").read_bytes() == data
    assert reads and set(reads) == {CHUNK}  # never read(-1): never the whole stream at once
    assert len(reads) == 5  # 3 whole chunks, the rest, and the empty read at the end


def test_a_stream_failing_half_way_leaves_no_copy_behind(root):
    target = root / "home" / "alice" / "big"
    target.write_text("old\n")

    class Failing(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell():
                raise OSError(28, "No space left on device")
            return super().read(size)

    with pytest.raises(OSError, match="No space"):
        write_file(str(root), "home/alice/big", Failing(b"x" * (2 * CHUNK)))
    assert target.read_text() == "old\n"
    assert listing(root / "home" / "alice") == ["big"]
