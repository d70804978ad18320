"""Writing files inside a container's rootfs without following its links.

Once a container has run, its root controls every path in its rootfs: a
symlink planted at /home/alice/.ssh could send a root-run write anywhere on
the host.  So every write walks the path one component at a time with
O_NOFOLLOW, from a directory file descriptor, and refuses any link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator

from ..core.errors import GpushellError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20  # a stream is copied this much at a time, never read whole


def _open_dir(name: str, dir_fd: int, rootfs: str, path: str) -> int:
    """Open a directory entry that must be a real directory, never a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise GpushellError(
                "refusing to follow a link inside the container",
                f"{rootfs}/{path}: {name} is a link or not a directory",
            ) from None
        raise


@contextlib.contextmanager
def _directory(rootfs: str, relative_dir: str, create_mode: int | None) -> Iterator[int]:
    fd = os.open(rootfs, _DIR_FLAGS)
    try:
        for part in [p for p in relative_dir.split("/") if p]:
            if part in (".", ".."):
                raise GpushellError(f"refusing path component {part!r}")
            if create_mode is not None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, create_mode, dir_fd=fd)
            child = _open_dir(part, fd, rootfs, relative_dir)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy(fd: int, content: bytes | BinaryIO) -> None:
    """content into fd: bytes at once; a binary stream CHUNK bytes at a time."""
    if isinstance(content, bytes):
        _write_all(fd, content)
        return
    while chunk := content.read(CHUNK):
        _write_all(fd, chunk)


def write_file(
    rootfs: str,
    path: str,
    content: str | bytes | BinaryIO,
    mode: int = 0o644,
    owner: tuple[int, int] = (0, 0),
    create_dirs: int | None = None,
) -> None:
    """Write rootfs/path atomically, owned by owner (ids as the container sees them).

    content may be a binary stream (an open file): it is copied in chunks,
    so a large file never sits in memory whole.  The rootfs is id-mapped at
    mount time, so on disk the container's ids are stored unshifted and
    owner needs no translation.
    """
    directory, _, name = path.strip("/").rpartition("/")
    data = content.encode() if isinstance(content, str) else content
    with _directory(rootfs, directory, create_dirs) as dir_fd:
        temporary = f".{name}.gpushell-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=dir_fd)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        try:
            try:
                _copy(fd, data)
                os.fchown(fd, *owner)
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:  # a half-written copy (disk full, say) does not stay behind
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=dir_fd)
            raise
        # rename() replaces a planted symlink itself, never what it points to.
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def make_dir(rootfs: str, path: str, mode: int, owner: tuple[int, int]) -> None:
    parent, _, name = path.strip("/").rpartition("/")
    with _directory(rootfs, parent, None) as dir_fd:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=dir_fd)
        fd = _open_dir(name, dir_fd, rootfs, path)
        try:
            os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


@contextlib.contextmanager
def regular_file(rootfs: str, path: str, dir_mode: int = 0o755) -> Iterator[tuple[int, str]]:
    """(directory fd, name) of rootfs/path, made empty if missing; never through a link.

    Missing directories are made with dir_mode.  A link (or anything but a
    regular file) at any component is refused, so the caller can mount onto
    the name from the directory fd without the container choosing where.
    """
    directory, _, name = path.strip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise GpushellError(f"refusing path {path!r}")
    with _directory(rootfs, directory, dir_mode) as dir_fd:
        with contextlib.suppress(FileExistsError):
            os.close(
                os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
            )
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            raise GpushellError(
                "refusing to follow a link inside the container",
                f"{rootfs}/{path.strip('/')} is a link or not a regular file",
            )
        yield dir_fd, name


def file_sizes(rootfs: str, directory: str) -> dict[str, int]:
    """Regular files in rootfs/directory and their sizes; {} when it is missing or a link."""
    try:
        with _directory(rootfs, directory, None) as dir_fd:
            found = {}
            for entry in os.scandir(dir_fd):
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        found[entry.name] = entry.stat(follow_symlinks=False).st_size
            return found
    except (OSError, GpushellError):
        return {}


def remove_file(rootfs: str, path: str) -> None:
    directory, _, name = path.strip("/").rpartition("/")
    with _directory(rootfs, directory, None) as dir_fd, contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


# --- repairs and reads: still never through a link ---------------------------

ASIDE_SUFFIX = ".gpushell-old"
# Each directory level of tree_size holds one file descriptor open; a tree
# deeper than this (only ever built on purpose) is counted down to it.
MAX_TREE_DEPTH = 256
CHECK_EVERY = 1024  # names a bounded walk counts between two looks at the clock


def _split(path: str) -> tuple[str, str]:
    directory, _, name = path.strip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise GpushellError(f"refusing path {path!r}")
    return directory, name


def kind_of(mode: int) -> str:
    """dir, file, link or other (a device, FIFO or socket), from a stat mode (pure)."""
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def entry_type(rootfs: str, path: str) -> str | None:
    """What rootfs/path itself is: 'dir', 'file', 'link' or 'other'; None when missing.

    A link is reported as a link, never followed; a link among the parent
    directories is refused like everywhere in this module.
    """
    directory, name = _split(path)
    try:
        with _directory(rootfs, directory, None) as dir_fd:
            return kind_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return None


def entries(rootfs: str, directory: str) -> dict[str, str]:
    """Names in rootfs/directory and what each is (see entry_type), links not followed."""
    found = {}
    with _directory(rootfs, directory, None) as dir_fd:
        with os.scandir(dir_fd) as listing:
            names = [entry.name for entry in listing]
        for name in names:
            with contextlib.suppress(OSError):  # gone meanwhile: the container may be running
                found[name] = kind_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    return found


def read_file(rootfs: str, path: str, limit: int) -> bytes | None:
    """The content of the regular file rootfs/path, or None (missing, a link, not a file, over limit).

    O_NONBLOCK: a FIFO swapped in after the check must not hang the helper.
    """
    directory, name = _split(path)
    try:
        with _directory(rootfs, directory, None) as dir_fd:
            if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return None
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=dir_fd)
    except (OSError, GpushellError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
        return None if len(data) > limit else data
    finally:
        os.close(fd)


def move_aside(rootfs: str, path: str, suffix: str = ASIDE_SUFFIX) -> str | None:
    """Rename rootfs/path to NAME+suffix in its own directory; the new name, or None if nothing was there.

    rename() acts on the directory entry itself: a planted link is moved,
    never what it points to.  An earlier file or link of that name is
    replaced; a directory there (which rename cannot replace unless empty)
    makes the new name unique instead.
    """
    directory, name = _split(path)
    with _directory(rootfs, directory, None) as dir_fd:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        target = name + suffix
        try:
            os.rename(name, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            target = f"{name}{suffix}-{os.urandom(4).hex()}"
            os.rename(name, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return target


def move(
    source_root: str, source: str, target_root: str, target: str, create_dirs: int | None = None
) -> None:
    """Rename source_root/source to target_root/target (one filesystem), no link followed on either side.

    Both parent directories are opened component by component with
    O_NOFOLLOW; the rename itself moves the entry, whatever it is.
    """
    source_dir, source_name = _split(source)
    target_dir, target_name = _split(target)
    with (
        _directory(source_root, source_dir, None) as source_fd,
        _directory(target_root, target_dir, create_dirs) as target_fd,
    ):
        os.rename(source_name, target_name, src_dir_fd=source_fd, dst_dir_fd=target_fd)


def make_link(rootfs: str, path: str, target: str) -> None:
    """Create the symlink rootfs/path -> target (a path as the container sees it); never followed here."""
    directory, name = _split(path)
    with _directory(rootfs, directory, None) as dir_fd:
        os.symlink(target, name, dir_fd=dir_fd)


def secure_dir(rootfs: str, path: str, owner: tuple[int, int], forbidden: int = 0o022) -> bool:
    """Make the real directory rootfs/path owned by root or owner, without `forbidden` mode bits.

    What sshd's StrictModes asks of a home directory.  True when it changed.
    """
    with _directory(rootfs, path, None) as fd:
        info = os.fstat(fd)
        changed = False
        if info.st_uid not in (0, owner[0]):
            os.fchown(fd, *owner)
            changed = True
        if info.st_mode & forbidden:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & ~forbidden)
            changed = True
        return changed


def secure_file(rootfs: str, path: str, mode: int, owner: tuple[int, int]) -> bool:
    """Give the regular file rootfs/path this mode and owner; True when it changed."""
    directory, name = _split(path)
    with _directory(rootfs, directory, None) as dir_fd:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise GpushellError(
                    "refusing to follow a link inside the container", f"{rootfs}/{path} is not a regular file"
                )
            changed = (info.st_uid, info.st_gid) != owner or stat.S_IMODE(info.st_mode) != mode
            if changed:
                os.fchown(fd, *owner)
                os.fchmod(fd, mode)
            return changed
        finally:
            os.close(fd)


def tree_size(top: str) -> int:
    """Bytes on disk (st_blocks * 512) under top, each inode once, no link followed.

    Like `du -sx`: hard links count once and another filesystem mounted
    inside is not entered.  Each directory is opened from its parent's
    descriptor with O_NOFOLLOW, so a running container swapping a directory
    for a link can never send the walk outside its rootfs.
    """
    return count_tree(top).bytes


class TreeCount:
    """What a walk of tree_size's found: bytes so far, and whether it saw every name."""

    def __init__(self, most_names: int | None, until: float | None) -> None:
        self.bytes, self.names, self.complete = 0, 0, True
        self.most_names, self.until = most_names, until

    def spent(self) -> bool:
        """Whether the walk must stop here: past its names, or (checked every CHECK_EVERY names) its time."""
        past_names = self.most_names is not None and self.names >= self.most_names
        late = self.until is not None and self.names % CHECK_EVERY == 0 and time.monotonic() >= self.until
        if past_names or late:
            self.complete = False
        return not self.complete


def count_tree(top: str, most_names: int | None = None, seconds: float | None = None) -> TreeCount:
    """tree_size's walk, stopped after most_names names or seconds of time (complete=False then):
    for a count whose length the container decides (a million empty files cost it nothing)."""
    count = TreeCount(most_names, None if seconds is None else time.monotonic() + seconds)
    fd = os.open(top, _DIR_FLAGS)
    try:
        info = os.fstat(fd)
        count.bytes = info.st_blocks * 512
        _count_directory(fd, info.st_dev, set(), 1, count)
    finally:
        os.close(fd)
    return count


def _count_directory(dir_fd: int, device: int, seen: set[int], depth: int, count: TreeCount) -> None:
    # Each name is looked at as it is listed, from this walk's own descriptor
    # (a DirEntry's stat() would use scandir's copy, closed once the listing
    # ends); only the subdirectories wait for the listing to end.
    subdirectories = []
    with os.scandir(dir_fd) as listing:
        for entry in listing:
            if count.spent():
                break
            count.names += 1
            try:
                info = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue  # removed meanwhile
            if stat.S_ISDIR(info.st_mode):
                if info.st_dev == device and depth < MAX_TREE_DEPTH:
                    subdirectories.append(entry.name)
            elif info.st_nlink > 1 and info.st_dev == device:  # on one filesystem, its inode number
                if info.st_ino in seen:
                    continue
                seen.add(info.st_ino)
            count.bytes += info.st_blocks * 512
    for name in subdirectories:
        if not count.complete:
            return
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue  # replaced by a link or removed meanwhile
        try:
            _count_directory(child, device, seen, depth + 1, count)
        finally:
            os.close(child)
