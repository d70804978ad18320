"""What a student's container uses: CPU time, memory, disk.

For `status`.  CPU and memory come from the container's cgroup (found
from its init process, as for `gpushell-admin list`), so they exist only
while it runs; disk is the rootfs's size on disk, counted without
following a link (the helper runs as root, the rootfs is the container's).
A number that cannot be read is left out rather than guessed.
"""

from __future__ import annotations

import os

from ..core.model import Registry, User
from ..system import rootfs
from ..system.runner import run
from . import cgroups, provision
from .backend import RUNNING, ContainerDriver


def init_pid(lxcpath: str, container: str) -> int | None:
    """The container's init PID as the host sees it, or None."""
    result = run(["lxc-info", "-P", lxcpath, "-n", container, "-pH"], check=False)
    text = result.stdout.strip()
    return int(text) if result.returncode == 0 and text.isdigit() and int(text) > 0 else None


def container_usage(reg: Registry, user: User, driver: ContainerDriver) -> dict[str, int]:
    """cgroups.read_usage's keys (while it runs) and disk_bytes; each left out when unknown."""
    found: dict[str, int] = {}
    if driver.state(user.container) == RUNNING:
        pid = init_pid(reg.lxcpath, user.container)
        if pid is not None:
            found.update(cgroups.read_usage(pid))
    disk = disk_bytes(os.path.join(provision.container_dir(reg, user.container), "rootfs"))
    if disk is not None:
        found["disk_bytes"] = disk
    return found


def disk_bytes(root: str) -> int | None:
    try:
        return rootfs.tree_size(root)
    except OSError:
        return None
