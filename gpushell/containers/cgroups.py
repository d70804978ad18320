"""A container's cgroup: the host's layout, and what the container uses and may use.

Hosts run cgroup v1 (hybrid: each controller its own hierarchy under
/sys/fs/cgroup/CONTROLLER) or v2 (one unified hierarchy at /sys/fs/cgroup;
a stock Debian 12 or Ubuntu).  A container's cgroup is found
from its init process's /proc/PID/cgroup; LXC puts the whole container in
`lxc.payload.NAME`, and anything below that (a systemd scope made inside
the container) is only part of it, so the path is cut after that level.
"""

from __future__ import annotations

import os

from ..core.value import Value

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
    if unified(root):
        return CgroupLayout(2, swap=_v2_has_swap(root))
    return CgroupLayout(1, swap=os.path.exists(f"{root}/memory/memory.memsw.limit_in_bytes"))


def unified(root: str = ROOT) -> bool:
    """Whether root holds cgroup v2's one unified hierarchy (its controllers at the top)."""
    return os.path.exists(f"{root}/cgroup.controllers")


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


def _container_dir(proc_cgroup: str, controller: str, root: str) -> str | None:
    """Where the container's cgroup for controller is mounted on this host, or None."""
    path = controller_path(proc_cgroup, controller)
    if path is None:
        return None
    if controller == "":  # v2: one unified hierarchy
        return f"{root}{container_level(path)}".rstrip("/")
    # The hierarchy may be mounted on its own or joined with another one.
    for mount in (controller, "cpu,cpuacct" if controller in ("cpu", "cpuacct") else None):
        if mount and os.path.isdir(f"{root}/{mount}"):
            return f"{root}/{mount}{container_level(path)}".rstrip("/")
    return None


def controller_dir(pid: int, controller: str, root: str = ROOT) -> str | None:
    """The cgroup directory of pid's container for controller (v1), or None if unknown."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as stream:
            text = stream.read()
    except OSError:
        return None
    return _container_dir(text, controller, root)


UNLIMITED = 2**62  # v1 writes "no limit" as a page-rounded 2**63 - 1
MAX_FILE = 65536


def number_in(text: str, field: str | None = None) -> int | None:
    """The number in a cgroup file's text, or in its `field N` line; None for `max` or nonsense (pure)."""
    if field is not None:
        pairs = (line.split() for line in text.splitlines())
        text = next((parts[1] for parts in pairs if len(parts) == 2 and parts[0] == field), "")
    text = text.strip()
    value = int(text) if text.isascii() and text.isdigit() else None
    return value if value is not None and value < UNLIMITED else None


def cpu_limit_millis(quota_text: str, period_text: str) -> int | None:
    """CPUs allowed as thousandths (1500: one and a half), from a quota and period; None: no limit."""
    quota, period = number_in(quota_text), number_in(period_text)
    return None if not quota or not period else quota * 1000 // period


def read_counter(directory: str, name: str, field: str | None = None) -> int | None:
    """A number from a cgroup file such as memory.usage_in_bytes, or None when unreadable."""
    text = _read(directory, name)
    return None if text is None else number_in(text, field)


def _read(directory: str, name: str) -> str | None:
    try:
        with open(os.path.join(directory, name), encoding="ascii") as stream:
            return stream.read(MAX_FILE)
    except (OSError, ValueError):
        return None


# What `status` shows, for each layout: key -> (controller, file, field of a keyed file).
V1_FILES = {
    "cpu_ns": ("cpuacct", "cpuacct.usage", None),
    "memory_bytes": ("memory", "memory.usage_in_bytes", None),
    "memory_limit_bytes": ("memory", "memory.limit_in_bytes", None),
    "oom_kills": ("memory", "memory.oom_control", "oom_kill"),
    "pids": ("pids", "pids.current", None),
    "pids_limit": ("pids", "pids.max", None),
}
V2_FILES = {
    "cpu_ns": ("", "cpu.stat", "usage_usec"),  # microseconds, scaled below
    "memory_bytes": ("", "memory.current", None),
    "memory_limit_bytes": ("", "memory.max", None),
    "oom_kills": ("", "memory.events", "oom_kill"),
    "pids": ("", "pids.current", None),
    "pids_limit": ("", "pids.max", None),
}
ALL_KEYS = (*V1_FILES, "cpu_limit_millis")


def read_usage(pid: int, keys: tuple[str, ...] = ALL_KEYS, root: str = ROOT) -> dict[str, int]:
    """What the container of pid uses and may use, from its cgroup; a key left out when unknown.

    The counters are the kernel's own for the container's top cgroup
    (created at its start), so `oom_kills` counts since the container started.
    """
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as stream:
            proc_cgroup = stream.read(MAX_FILE)
    except OSError:
        return {}
    return usage_in(proc_cgroup, keys, root)


def usage_in(proc_cgroup: str, keys: tuple[str, ...] = ALL_KEYS, root: str = ROOT) -> dict[str, int]:
    """read_usage for a /proc/PID/cgroup text, with the hierarchies mounted at root."""
    v2 = unified(root)
    files = V2_FILES if v2 else V1_FILES
    found: dict[str, int] = {}
    for key in keys:
        if key == "cpu_limit_millis":
            value = _cpu_limit(proc_cgroup, v2, root)
        else:
            controller, name, field = files[key]
            directory = _container_dir(proc_cgroup, controller, root)
            value = None if directory is None else read_counter(directory, name, field)
            if value is not None and v2 and key == "cpu_ns":
                value *= 1000
        if value is not None:
            found[key] = value
    return found


def _cpu_limit(proc_cgroup: str, v2: bool, root: str) -> int | None:
    directory = _container_dir(proc_cgroup, "" if v2 else "cpu", root)
    if directory is None:
        return None
    if v2:
        quota, _, period = (_read(directory, "cpu.max") or "").partition(" ")
        return cpu_limit_millis(quota, period)
    return cpu_limit_millis(
        _read(directory, "cpu.cfs_quota_us") or "", _read(directory, "cpu.cfs_period_us") or ""
    )


def memory_bytes(pid: int) -> int | None:
    return read_usage(pid, ("memory_bytes",)).get("memory_bytes")


def cpu_nanoseconds(pid: int) -> int | None:
    return read_usage(pid, ("cpu_ns",)).get("cpu_ns")


def cpu_percent(before_ns: int | None, after_ns: int | None, elapsed_s: float) -> float | None:
    """CPU use over a sample as a percentage of one CPU, like top (pure)."""
    if before_ns is None or after_ns is None or elapsed_s <= 0:
        return None
    return max(0.0, (after_ns - before_ns) / (elapsed_s * 1e9) * 100.0)
