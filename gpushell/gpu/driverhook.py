"""`driver: host`: LXC's mount hook that binds the host's current driver files into a container.

A GPU container's config carries `lxc.hook.mount = gpushell-driver-hook
DRIVER_ROOT` (lxcconfig.hook_line).  LXC runs it at every start in the
container's new mount namespace, after the rootfs is mounted at
$LXC_ROOTFS_MOUNT and before pivot_root, with the container's name, `lxc`
and `mount` appended.  It lists the host driver's files of the version
loaded now (driverfiles.read_host), so a driver upgrade needs nothing done
to the containers: their next start gets the new files.

Each file is bind-mounted read-only onto a regular file at the same path in
the rootfs (made empty if missing).  The container's root controls that
rootfs, so targets are reached one component at a time without following
a link (rootfs.regular_file), and the mount goes onto the file descriptor,
never onto a path the kernel would resolve again.  A link anywhere on the
way fails the hook, and with it the start: nothing is mounted on a path
the container chose.  Messages go to standard output, which LXC logs.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence

from ..core.errors import GpushellError
from ..system import rootfs
from . import driverfiles

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND = 32, 4096
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
# statvfs f_flag bits that are mount flags the kernel may have locked (in a
# user namespace a remount must keep them) -> the mount(2) flag for each.
KEPT_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)


def remount_flags(statvfs_flags: int) -> int:
    """The flags for remounting a bind mount read-only while keeping its other flags."""
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for st_flag, ms_flag in KEPT_FLAGS:
        if statvfs_flags & st_flag:
            flags |= ms_flag
    return flags


def target_directories() -> tuple[str, ...]:
    return (*driverfiles.LIB_DIRS, driverfiles.BIN_DIR)


# --- side effects -------------------------------------------------------------------


def _mount(source: str | None, target: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.mount(
        None if source is None else os.fsencode(source), os.fsencode(target), None, flags, None
    )
    if result != 0:
        error = ctypes.get_errno()
        raise GpushellError(f"mount {source or '(remount)'} on {target}: {os.strerror(error)}")


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def bind_read_only(source: str, dir_fd: int, name: str) -> None:
    """Bind source onto the regular file `name` in dir_fd, then make that mount read-only."""
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        _mount(source, _fd_path(fd), MS_BIND)
    finally:
        os.close(fd)
    # Opened again: the name now leads to the new mount, the one to remount.
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        path = _fd_path(fd)
        _mount(None, path, remount_flags(os.statvfs(path).f_flag))
        if not os.statvfs(path).f_flag & os.ST_RDONLY:
            raise GpushellError(f"{name}: the bind mount is still writable")
    finally:
        os.close(fd)


def mount_driver(root: str, container_root: str) -> tuple[str | None, int]:
    """Mount the host driver's files under container_root; (version, how many files)."""
    version, files = driverfiles.read_host(root)
    present = {d: rootfs.file_sizes(container_root, d) for d in target_directories()}
    for path in driverfiles.stale_placeholders(present, files):
        rootfs.remove_file(container_root, path)
    prefix = root.rstrip("/")
    for source, target in files:
        with rootfs.regular_file(container_root, target) as (dir_fd, name):
            bind_read_only(prefix + source, dir_fd, name)
    return version, len(files)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    container_root = os.environ.get("LXC_ROOTFS_MOUNT", "")
    if not args or not args[0].startswith("/") or not container_root.startswith("/"):
        print("usage: gpushell-driver-hook DRIVER_ROOT [NAME lxc mount], run by LXC with LXC_ROOTFS_MOUNT")
        return 2
    name = args[1] if len(args) > 1 else "?"
    try:
        version, count = mount_driver(args[0], container_root)
    except (GpushellError, OSError) as exc:
        text = exc.log_message if isinstance(exc, GpushellError) else str(exc)
        print(f"gpushell-driver-hook: {name}: {text}", flush=True)
        print(f"gpushell-driver-hook: {name}: {text}", file=sys.stderr, flush=True)
        return 1
    print(f"gpushell-driver-hook: {name}: {count} file(s) of NVIDIA driver {version or '(none)'}")
    return 0
