"""What a student's container uses: CPU time, memory, disk.

For `status`.  CPU and memory come from the container's cgroup (found
from its init process, as for `gpushell-admin list`), so they exist only
while it runs; disk is the storage's word (storage.disk_used): on `dir`
the rootfs's size on disk, counted without following a link (the helper
runs as root, the rootfs is the container's), with no limit; on btrfs
what the container's quota group holds against its limit.
A number that cannot be read is left out rather than guessed.
"""

from __future__ import annotations

from ..core.model import Registry, User
from . import cgroups, storage
from .backend import RUNNING, ContainerDriver


def container_usage(reg: Registry, user: User, driver: ContainerDriver) -> dict[str, int]:
    """cgroups.read_usage's keys (while it runs) and disk_bytes; each left out when unknown."""
    if reg.cluster is not None:
        from .lxd import LxdDriver

        assert isinstance(driver, LxdDriver)
        return driver.usage(user)
    found: dict[str, int] = {}
    state, pid = driver.info(user.container)
    if state == RUNNING and pid is not None:
        found.update(cgroups.read_usage(pid))
    copies = storage.for_registry(reg)
    disk = copies.disk_used(driver.directory(user.container))
    if disk is not None:
        found["disk_bytes"] = disk
        if copies.has_quota:  # on `dir` the disk is counted, never held: no limit to show
            found["disk_limit_bytes"] = user.limits.disk
    return found
