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
from collections.abc import Iterator

from .errors import GpushellError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def write_file(
    rootfs: str,
    path: str,
    content: str | bytes,
    mode: int = 0o644,
    owner: tuple[int, int] = (0, 0),
    create_dirs: int | None = None,
) -> None:
    """Write rootfs/path atomically, owned by owner (ids as the container sees them).

    The rootfs is id-mapped at mount time, so on disk the container's ids
    are stored unshifted and owner needs no translation.
    """
    directory, _, name = path.strip("/").rpartition("/")
    data = content.encode() if isinstance(content, str) else content
    with _directory(rootfs, directory, create_dirs) as dir_fd:
        temporary = f".{name}.gpushell-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=dir_fd)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        try:
            os.write(fd, data)
            os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
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
