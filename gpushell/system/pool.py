"""The lxcpath's filesystem as the admin side sees it: its kind, btrfs quotas, a loop-backed pool.

A loop-backed pool is one sparse file holding a btrfs filesystem, mounted
at the lxcpath: the way to try btrfs storage on a host without a spare
disk.  `mount -o loop` sets up the loop device itself (reusing one already
backed by the file) and marks it to go away at unmount, so nothing here
keeps a loop device by number.  Nothing mounts over files: the lxcpath
must be empty (or absent) before a pool is mounted there, so a pool never
hides containers under it.
"""

from __future__ import annotations

import os

from ..core.errors import ExitStatus, GpushellError
from .runner import run

BTRFS = "btrfs"
# mkfs.btrfs refuses smaller devices (with its default DUP metadata); a lab needs far more.
MIN_POOL_SIZE = 256 * 2**20


# --- pure ------------------------------------------------------------------


def pool_problem(pool_file: str, lxcpath: str, size: int | None) -> str | None:
    """Why `--pool-file pool_file --size size` cannot make a pool for lxcpath, or None (pure)."""
    if not os.path.isabs(pool_file):
        return f"--pool-file {pool_file}: give an absolute path"
    inside = os.path.normpath(pool_file) + "/"
    if inside.startswith(os.path.normpath(lxcpath).rstrip("/") + "/"):
        return f"--pool-file {pool_file} is inside the lxcpath {lxcpath}, which the pool is mounted over"
    if size is None:
        return "--pool-file needs --size (the pool's largest size, like 200G; the file starts sparse)"
    if size < MIN_POOL_SIZE:
        return f"--size: a pool needs at least {MIN_POOL_SIZE // 2**20}M"
    return None


def free_estimate(usage_text: str) -> int | None:
    """`Free (estimated):` in bytes from `btrfs filesystem usage -b` (pure); None when absent."""
    for line in usage_text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Free (estimated)":
            number = value.split()[0] if value.split() else ""
            return int(number) if number.isdigit() else None
    return None


# --- reading the host ----------------------------------------------------------


def existing_part(path: str) -> str:
    """path, or the nearest directory above it that exists (what a new directory would be on)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    return path


def filesystem_type(path: str) -> str:
    """The kind of filesystem path (or the nearest existing directory above it) is on: btrfs, ext4, ..."""
    return run(
        ["findmnt", "--noheadings", "--output", "FSTYPE", "--target", existing_part(path)]
    ).stdout.strip()


def quotas_enabled(path: str) -> bool:
    """Whether btrfs quotas are on for the filesystem holding path (btrfs says no when they are off)."""
    return run(["btrfs", "qgroup", "show", path], check=False).returncode == 0


def enable_quotas(path: str) -> bool:
    """Turn btrfs quotas on for path's filesystem; whether they were off."""
    if quotas_enabled(path):
        return False
    run(["btrfs", "quota", "enable", path], timeout=600)
    return True


def rescan_quotas(path: str) -> None:
    """Bring btrfs's quota counts in line after copies into new quota groups, and wait for it."""
    if quotas_enabled(path):
        run(["btrfs", "quota", "rescan", "-w", path], check=False, timeout=1800)


def free_bytes(path: str) -> int:
    """Space still free for new data: btrfs's own estimate there, statvfs elsewhere."""
    if filesystem_type(path) == BTRFS:
        text = run(["btrfs", "filesystem", "usage", "-b", path], check=False).stdout
        estimate = free_estimate(text)
        if estimate is not None:
            return estimate
    info = os.statvfs(existing_part(path))
    return info.f_bavail * info.f_frsize


def mount_source(path: str) -> str | None:
    """The device mounted exactly at path, or None when path is no mount point."""
    path = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as stream:
        for line in stream:
            fields = line.split()
            if len(fields) < 10 or "-" not in fields:
                continue
            mount_point = fields[4].replace("\\040", " ")
            if mount_point == path:
                found = fields[fields.index("-") + 2]  # the last mount there is the one seen
    return found


def backing_file(device: str) -> str | None:
    """The file behind a loop device (/dev/loopN), or None when it is not one."""
    name = os.path.basename(device)
    if not name.startswith("loop"):
        return None
    try:
        with open(f"/sys/block/{name}/loop/backing_file", encoding="utf-8") as stream:
            return stream.read().strip()
    except OSError:
        return None


def pool_mounted(pool_file: str, lxcpath: str) -> bool:
    """Whether the pool file is what is mounted at the lxcpath."""
    device = mount_source(lxcpath)
    return device is not None and backing_file(device) == os.path.realpath(pool_file)


# --- changing the host -----------------------------------------------------------


def _check_empty_mount_point(lxcpath: str) -> None:
    if os.path.ismount(lxcpath):
        raise GpushellError(
            f"{lxcpath} is already a mount point; unmount it or use it as it is (init --storage btrfs)",
            status=ExitStatus.USAGE,
        )
    if os.path.isdir(lxcpath) and os.listdir(lxcpath):
        raise GpushellError(
            f"{lxcpath} is not empty: a pool mounted there would hide what it holds; "
            "move its contents away first (or choose another lxcpath)",
            status=ExitStatus.USAGE,
        )
    if os.path.lexists(lxcpath) and not os.path.isdir(lxcpath):
        raise GpushellError(f"{lxcpath} exists and is not a directory", status=ExitStatus.USAGE)


def mount(pool_file: str, lxcpath: str) -> None:
    """Mount the pool file at the (empty or absent) lxcpath, its loop device set up by mount."""
    if not os.path.isfile(pool_file):
        raise GpushellError(f"the pool file {pool_file} is missing; the containers are in it")
    _check_empty_mount_point(lxcpath)
    os.makedirs(lxcpath, mode=0o755, exist_ok=True)
    run(["mount", "-t", BTRFS, "-o", "loop", pool_file, lxcpath], timeout=300)


def create(pool_file: str, size: int, lxcpath: str) -> None:
    """A new sparse pool file of `size` bytes with a btrfs filesystem, mounted at lxcpath, quotas on.

    Checked before anything is made; a failure after the file exists removes it again.
    """
    _check_empty_mount_point(lxcpath)
    directory = os.path.dirname(pool_file)
    if not os.path.isdir(directory):
        raise GpushellError(f"--pool-file: {directory} does not exist", status=ExitStatus.USAGE)
    try:
        fd = os.open(pool_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise GpushellError(
            f"{pool_file} already exists; remove it or choose another --pool-file", status=ExitStatus.USAGE
        ) from None
    try:
        try:
            os.ftruncate(fd, size)  # sparse: blocks are taken as the pool fills
        finally:
            os.close(fd)
        run(["mkfs.btrfs", "--quiet", "--label", "gpushell", pool_file], timeout=300)
        mount(pool_file, lxcpath)
    except BaseException:
        os.unlink(pool_file)
        raise
    try:
        os.chmod(lxcpath, 0o755)
        enable_quotas(lxcpath)
    except BaseException:
        run(["umount", lxcpath], check=False)
        os.unlink(pool_file)
        raise
