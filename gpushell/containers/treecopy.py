"""Copying a rootfs that container root wrote, without ever following its links.

A snapshot copies a tree whose every name the container chose; `cp -a`
walks it by path, so a directory swapped for a link between cp's lstat()
and its opendir() would send the copy into the host (a snapshot holding
/etc/shadow, restored into the container).  This copy walks by directory
descriptors instead, and never resolves a name in the source twice:

- each directory is opened from its parent's descriptor with
  O_DIRECTORY|O_NOFOLLOW, each entry looked at with fstatat(NOFOLLOW);
- a regular file is opened O_PATH|O_NOFOLLOW (which opens nothing: no
  device or FIFO is ever opened, so none can block or act), checked to be
  the very inode just looked at, and only then reopened for reading
  through /proc/self/fd;
- links are copied as links (readlink, never followed), devices, FIFOs
  and sockets are made anew with mknod, hard links stay hard links;
- ids (as on disk: the rootfs is id-mapped at mount time), modes, times,
  xattrs (ACLs and file capabilities included) are kept, holes too, so a
  sparse file costs in the copy what it costs in the container.

Anything that is not what it was a moment earlier (a directory become a
link, another inode under the same name) aborts the whole copy: the
caller holds the container still (frozen, or stopped and unable to
start), so a change means that hold failed, and no half-true copy is
kept.  Another filesystem mounted inside is not entered (like `cp -ax`,
and like rootfs.tree_size, which sizes the copy beforehand).

Every destination path is our own (made by this copy, root's alone), so
it is used by name under the target's descriptors.
"""

from __future__ import annotations

import errno
import os
import stat

from ..core.errors import GpushellError
from ..core.units import size_text
from ..system.rootfs import kind_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Hook = Callable[[str, str], None]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Two descriptors stay open per level (source and copy), so the depth is
# bounded well inside the usual 1024 open files; a real system goes ~30 deep.
MAX_DEPTH = 256
CHUNK = 1 << 30  # bytes asked of one copy_file_range call
# copy_file_range refuses these between some filesystems: read and write instead.
_NO_RANGE_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_NO_XATTRS = {errno.EOPNOTSUPP, errno.ENOTSUP}
SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT}


class TreeChanged(GpushellError):
    """The source was not what it had been a moment before: the copy is worthless."""


# --- space -------------------------------------------------------------------

MIB = 1 << 20
# Beyond the tree's own blocks: directories and metadata the copy writes
# anew may take more room than on the source, and the host needs air.
SPACE_MARGIN = 256 * MIB


def needed_bytes(tree_bytes: int) -> int:
    """Room a copy of a tree of tree_bytes (on disk) needs, margin included (pure)."""
    return tree_bytes + tree_bytes // 20 + SPACE_MARGIN


def space_refusal(tree_bytes: int, free: int, what: str) -> str | None:
    """Why a copy of tree_bytes will not fit in free bytes, or None (pure)."""
    needed = needed_bytes(tree_bytes)
    if needed <= free:
        return None
    return f"not enough disk space for {what}: needs {size_text(needed)}, {size_text(free)} free"


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer could still use on path's filesystem (root keeps the reserve)."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def check_space(directory: str, tree_bytes: int, what: str) -> None:
    why = space_refusal(tree_bytes, free_bytes(directory), what)
    if why is not None:
        raise GpushellError(why, f"{why} (in {directory})")


# --- the copy -----------------------------------------------------------------


def copy_tree(source: str, target: str, hook: Hook | None = None, *, target_made: bool = False) -> None:
    """Copy the directory source to target (which must not exist); see the module's notes.

    hook(relative path, kind) runs after each entry is looked at and
    before it is opened: tests change the tree there, at the worst moment.
    target_made: target is an empty directory made by the caller (a btrfs
    subvolume, say) that the copy fills.  A partial target is left for the
    caller to remove.
    """
    source_fd = os.open(source, _DIR_FLAGS)
    try:
        info = os.fstat(source_fd)
        if not target_made:
            os.mkdir(target, 0o700)
        target_fd = os.open(target, _DIR_FLAGS)
        try:
            _Copy(target_fd, info.st_dev, hook).directory(source_fd, target_fd, "", 1)
            _finish(source_fd, target_fd, info)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)


def _changed(path: str, what: str) -> TreeChanged:
    return TreeChanged(
        "your container's files changed during the copy; nothing was kept; try again",
        f"copy aborted: /{path} {what} while it was copied",
    )


class _Copy:
    def __init__(self, target_root: int, device: int, hook: Hook | None) -> None:
        self.target_root, self.device, self.hook = target_root, device, hook
        # (st_dev, st_ino) of a multiply linked source -> its copy's path under target.
        self.linked: dict[tuple[int, int], str] = {}

    def directory(self, source_fd: int, target_fd: int, path: str, depth: int) -> None:
        """Copy every entry of the open source directory into the open target one."""
        # Names only: a DirEntry's own stat() would use scandir's duplicate
        # descriptor, closed once the listing ends.
        with os.scandir(source_fd) as listing:
            names = [entry.name for entry in listing]
        for name in names:
            self.entry(source_fd, target_fd, name, f"{path}/{name}" if path else name, depth)

    def entry(self, source_fd: int, target_fd: int, name: str, path: str, depth: int) -> None:
        try:
            info = os.stat(name, dir_fd=source_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise _changed(path, "vanished") from None
        mode = info.st_mode
        kind = kind_of(mode)  # dir, file, link, or other: a node made anew
        if self.hook is not None:
            self.hook(path, kind)
        if kind != "dir" and info.st_nlink > 1 and self._link_again(info, target_fd, name, path):
            return
        if kind == "dir":
            self.subdirectory(source_fd, target_fd, name, path, info, depth)
        elif kind == "file":
            _copy_file(source_fd, target_fd, name, path, info)
        elif kind == "link":
            _copy_link(source_fd, target_fd, name, path, info)
        else:
            _make_node(source_fd, target_fd, name, info)

    def _link_again(self, info: os.stat_result, target_fd: int, name: str, path: str) -> bool:
        """Make name a hard link to an earlier copy of the same inode; False for its first sight."""
        key = (info.st_dev, info.st_ino)
        first = self.linked.get(key)
        if first is None:
            self.linked[key] = path
            return False
        os.link(first, name, src_dir_fd=self.target_root, dst_dir_fd=target_fd, follow_symlinks=False)
        return True

    def subdirectory(
        self, source_fd: int, target_fd: int, name: str, path: str, info: os.stat_result, depth: int
    ) -> None:
        if depth >= MAX_DEPTH:
            raise GpushellError(
                f"a directory in your container is nested more than {MAX_DEPTH} levels deep; "
                "nothing was kept",
                f"copy aborted: /{path} is {MAX_DEPTH} levels deep",
            )
        child = _open_same(source_fd, name, path, info, _DIR_FLAGS)
        try:
            os.mkdir(name, 0o700, dir_fd=target_fd)
            copy = os.open(name, _DIR_FLAGS, dir_fd=target_fd)
            try:
                if info.st_dev == self.device:  # a mount point is copied empty
                    self.directory(child, copy, path, depth + 1)
                # After its entries: they change its times, and a read-only mode would stop them.
                _finish(child, copy, info)
            finally:
                os.close(copy)
        finally:
            os.close(child)


def _open_same(dir_fd: int, name: str, path: str, info: os.stat_result, flags: int) -> int:
    """Open name (never through a link) and make sure it is the inode `info` described."""
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise _changed(path, "was replaced") from None
        raise
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino) or stat.S_IFMT(now.st_mode) != stat.S_IFMT(
        info.st_mode
    ):
        os.close(fd)
        raise _changed(path, "was replaced")
    return fd


def _copy_file(source_fd: int, target_fd: int, name: str, path: str, info: os.stat_result) -> None:
    handle = _open_same(source_fd, name, path, info, _PATH_FLAGS)
    try:
        # Reopening the O_PATH descriptor through /proc reaches that inode and
        # no other: the name is not resolved again.
        readable = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(handle)
    try:
        copy = os.open(name, _NEW_FILE, 0o600, dir_fd=target_fd)
        try:
            _copy_data(readable, copy, info.st_size)
            _finish(readable, copy, info)
        finally:
            os.close(copy)
    finally:
        os.close(readable)


def _copy_data(source: int, target: int, size: int) -> None:
    """size bytes, holes kept: only the data extents are copied (SEEK_DATA/SEEK_HOLE)."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(source, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            break  # a hole to the end
        if start >= size:
            break
        end = min(os.lseek(source, start, os.SEEK_HOLE), size)
        if not _copy_range(source, target, start, end):
            break  # the file shrank meanwhile
        offset = end
    os.ftruncate(target, size)


def _copy_range(source: int, target: int, start: int, end: int) -> bool:
    """Bytes start..end at the same offsets; False when the source ended early."""
    position = start
    while position < end:
        count = min(end - position, CHUNK)
        try:
            done = os.copy_file_range(source, target, count, position, position)
        except OSError as exc:
            if exc.errno not in _NO_RANGE_COPY:
                raise
            done = _read_write(source, target, count, position)
        if done == 0:
            return False
        position += done
    return True


def _read_write(source: int, target: int, count: int, position: int) -> int:
    data = os.pread(source, min(count, 1 << 20), position)
    view = memoryview(data)
    while view:
        view = view[os.pwrite(target, view, position + len(data) - len(view)) :]
    return len(data)


def _finish(source: int, target: int, info: os.stat_result) -> None:
    """Owner, mode, xattrs and times of an open copy, in the order that keeps them all.

    chown clears set-id bits and file capabilities: the mode and the
    xattrs come after it; the times last, as everything before changes them.
    """
    os.fchown(target, info.st_uid, info.st_gid)
    os.fchmod(target, stat.S_IMODE(info.st_mode))
    _copy_xattrs(source, target)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))


def _copy_xattrs(source: int | str, target: int | str) -> None:
    """Every extended attribute (ACLs, capabilities, user.*) of source onto target.

    Paths here are /proc/self/fd/N/NAME forms, used with follow_symlinks=False:
    the directory is the open descriptor, and the last name is never followed.
    """
    # A descriptor is what it is; a path's last name must not be followed.
    follow = isinstance(source, int)
    try:
        names = os.listxattr(source, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return
        raise
    for key in names:
        try:
            value = os.getxattr(source, key, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed meanwhile
                continue
            raise
        try:
            os.setxattr(target, key, value, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise


def _in_dir(dir_fd: int, name: str) -> str:
    """A path that names `name` inside the open directory dir_fd, for calls that take no dir_fd."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _copy_link(source_fd: int, target_fd: int, name: str, path: str, info: os.stat_result) -> None:
    try:
        destination = os.readlink(name, dir_fd=source_fd)  # the link's text; nothing is followed
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):  # no longer a link
            raise _changed(path, "was replaced") from None
        raise
    os.symlink(destination, name, dir_fd=target_fd)
    _finish_entry(source_fd, target_fd, name, info, mode=False)


def _make_node(source_fd: int, target_fd: int, name: str, info: os.stat_result) -> None:
    """A device, FIFO or socket made anew, never opened: what it is, not what it holds."""
    os.mknod(name, stat.S_IFMT(info.st_mode) | 0o600, info.st_rdev, dir_fd=target_fd)
    _finish_entry(source_fd, target_fd, name, info, mode=True)


def _finish_entry(source_fd: int, target_fd: int, name: str, info: os.stat_result, mode: bool) -> None:
    """Owner, mode (not a link's: it has none), xattrs and times of what is not opened; as _finish."""
    os.chown(name, info.st_uid, info.st_gid, dir_fd=target_fd, follow_symlinks=False)
    if mode:  # our own node, made just now: a chmod by its name reaches nothing else
        os.chmod(name, stat.S_IMODE(info.st_mode), dir_fd=target_fd)
    _copy_xattrs(_in_dir(source_fd, name), _in_dir(target_fd, name))
    os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=target_fd, follow_symlinks=False)
