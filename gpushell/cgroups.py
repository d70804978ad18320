"""A container's cgroup v1 counters: memory in use and CPU time used.

This host kind runs cgroup v1 (hybrid): each controller is its own
hierarchy under /sys/fs/cgroup/CONTROLLER.  A container's cgroup is found
from its init process's /proc/PID/cgroup; LXC puts the whole container in
`lxc.payload.NAME`, and anything below that (a systemd scope made inside
the container) is only part of it, so the path is cut after that level.
"""

from __future__ import annotations

import os

from .model import Value

ROOT = "/sys/fs/cgroup"
PAYLOAD_PREFIX = "lxc.payload."


class CgroupLayout(Value):
    """Which cgroup interface the host offers: v1 (one hierarchy per controller) or v2 (unified)."""

    __slots__ = ("swap", "version")

    def __init__(self, version: int, swap: bool) -> None:
        self.version = version
        self.swap = swap  # whether swap can be limited (memsw or memory.swap.max exists)


CGROUP_V1 = CgroupLayout(1, swap=True)
CGROUP_V2 = CgroupLayout(2, swap=True)


def layout(root: str = ROOT) -> CgroupLayout:
    """The host's cgroup layout: v2 when the unified hierarchy is mounted at root."""
    if os.path.exists(f"{root}/cgroup.controllers"):
        return CgroupLayout(2, swap=_v2_has_swap(root))
    return CgroupLayout(1, swap=os.path.exists(f"{root}/memory/memory.memsw.limit_in_bytes"))


def _v2_has_swap(root: str) -> bool:
    # The root cgroup has no memory.swap.max; this process's own cgroup does
    # unless the kernel was booted without swap accounting.
    try:
        with open("/proc/self/cgroup", encoding="ascii") as stream:
            own = stream.read().strip().rpartition(":")[2]
    except OSError:
        return True
    return own in ("", "/") or os.path.exists(f"{root}{own}/memory.swap.max")


def controller_path(proc_cgroup: str, controller: str) -> str | None:
    """The path of `controller` in a /proc/PID/cgroup text, or None (pure).

    Lines look like `4:memory:/lxc.payload.alice`; one hierarchy may carry
    several controllers (`2:cpu,cpuacct:/...`).
    """
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            return parts[2]
    return None


def container_level(path: str) -> str:
    """Cut a cgroup path after its `lxc.payload.*` level, if it has one (pure)."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part.startswith(PAYLOAD_PREFIX):
            return "/".join(parts[: index + 1])
    return path


def controller_dir(pid: int, controller: str, root: str = ROOT) -> str | None:
    """The cgroup directory of pid's container for controller, or None if unknown."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as stream:
            text = stream.read()
    except OSError:
        return None
    path = controller_path(text, controller)
    if path is None:
        return None
    # The hierarchy may be mounted on its own or joined with another one.
    for mount in (controller, "cpu,cpuacct" if controller in ("cpu", "cpuacct") else None):
        if mount and os.path.isdir(f"{root}/{mount}"):
            return f"{root}/{mount}{container_level(path)}".rstrip("/")
    return None


def read_counter(directory: str, name: str) -> int | None:
    """An integer file such as memory.usage_in_bytes, or None when unreadable."""
    try:
        with open(os.path.join(directory, name), encoding="ascii") as stream:
            return int(stream.read().strip())
    except (OSError, ValueError):
        return None


def memory_bytes(pid: int) -> int | None:
    directory = controller_dir(pid, "memory")
    return None if directory is None else read_counter(directory, "memory.usage_in_bytes")


def cpu_nanoseconds(pid: int) -> int | None:
    directory = controller_dir(pid, "cpuacct")
    return None if directory is None else read_counter(directory, "cpuacct.usage")


def cpu_percent(before_ns: int | None, after_ns: int | None, elapsed_s: float) -> float | None:
    """CPU use over a sample as a percentage of one CPU, like top (pure)."""
    if before_ns is None or after_ns is None or elapsed_s <= 0:
        return None
    return max(0.0, (after_ns - before_ns) / (elapsed_s * 1e9) * 100.0)
