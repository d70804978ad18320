"""What a student's container uses: CPU time, memory, disk.

For `status`.  CPU and memory come from the container's cgroup (found
from its init process, as for `gpushell-admin list`), so they exist only
while it runs; disk is the storage's word where it keeps one (on btrfs
what the container's quota group holds against its limit), and otherwise
the rootfs counted on disk (diskcount.py: bounded, remembered, without
following a link: the helper runs as root, the rootfs is the container's),
with no limit.  A number that cannot be read is left out rather than guessed.
"""

from __future__ import annotations

import os
import time

from ..core.model import Registry, User
from . import cgroups, diskcount, storage
from .backend import RUNNING, ContainerDriver

SHOWN_AGE = 60  # seconds: a count older than this says how old it is


def container_usage(reg: Registry, user: User, driver: ContainerDriver, record: str) -> dict[str, int]:
    """cgroups.read_usage's keys (while it runs) and the disk's; each left out when unknown.

    record: where the rootfs's last count is kept (paths.disk_count).
    """
    if reg.cluster is not None:
        from .lxd import LxdDriver

        assert isinstance(driver, LxdDriver)
        return driver.usage(user)
    found: dict[str, int] = {}
    state, pid = driver.info(user.container)
    if state == RUNNING and pid is not None:
        found.update(cgroups.read_usage(pid))
    copies = storage.for_registry(reg)
    directory = driver.directory(user.container)
    held = copies.disk_used(directory)
    if held is not None:
        found.update(disk_bytes=held, disk_limit_bytes=user.limits.disk)
        return found
    count = diskcount.counted(record, os.path.join(directory, "rootfs"))
    if count is not None:  # counted, never held: no limit to show
        found["disk_bytes"] = count.bytes
        if not count.complete:
            found["disk_partial"] = 1
        age = int(time.time() - count.counted_at)
        if age >= SHOWN_AGE:
            found["disk_age_seconds"] = age
    return found
