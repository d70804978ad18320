"""What a student's container uses: CPU time, memory, disk.

For `status`.  CPU and memory come from the container's cgroup (found
from its init process, as for `gpushell-admin list`), so they exist only
while it runs; disk is the rootfs's size on disk, counted without
following a link (the helper runs as root, the rootfs is the container's).
A number that cannot be read is left out rather than guessed.
"""

from __future__ import annotations

from ..core.model import Registry, User
from ..system import rootfs
from . import cgroups
from .backend import RUNNING, ContainerDriver


def container_usage(reg: Registry, user: User, driver: ContainerDriver) -> dict[str, int]:
    """cgroups.read_usage's keys (while it runs) and disk_bytes; each left out when unknown."""
    found: dict[str, int] = {}
    state, pid = driver.info(user.container)
    if state == RUNNING and pid is not None:
        found.update(cgroups.read_usage(pid))
    disk = disk_bytes(driver.rootfs(user.container))
    if disk is not None:
        found["disk_bytes"] = disk
    return found


def disk_bytes(root: str) -> int | None:
    try:
        return rootfs.tree_size(root)
    except OSError:
        return None
