"""The host's figures for the status page: CPU, memory, the containers' disk, students online.

Read through psutil (imported here only: the tick needs it, a login
never does).  CPU use is not a figure of one moment: this gives the CPU
seconds since boot, and statusmodel.cpu_use takes the difference from the
last tick's.  Students online: their containers running (the caller's
one look at the backend) and those with a session on the host (utmp).  A
figure that cannot be read is None; the page says "unknown".
"""

from __future__ import annotations

import os

from ..core.statusmodel import HostFigures

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry


def read(reg: Registry, running: set[str] | None) -> HostFigures:
    """The figures now; running: the names of the containers running (None: unknown)."""
    import psutil

    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    memory = psutil.virtual_memory()
    disk_used: int | None = None
    disk_total: int | None = None
    try:
        disk = psutil.disk_usage(reg.lxcpath)
        disk_used, disk_total = int(disk.used), int(disk.total)
    except OSError:
        pass  # no lxcpath yet: unknown
    students = set(reg.users)
    logged_in = len({session.name for session in psutil.users()} & students)
    return HostFigures(
        cpu_times=(total - idle, total),
        cpus=os.cpu_count(),
        load=os.getloadavg()[0],
        memory_used=int(memory.total - memory.available),
        memory_total=int(memory.total),
        disk_used=disk_used,
        disk_total=disk_total,
        running=None
        if running is None
        else sum(1 for user in reg.users.values() if user.container in running),
        logged_in=logged_in,
    )
