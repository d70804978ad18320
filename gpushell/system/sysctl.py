"""The kernel's tunables under /proc/sys, read and raised (init, apply, doctor)."""

from __future__ import annotations

import os

from ..core import kernelpools

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections off the login path: a cold start reads host_memory (signalpool.py)
    from collections.abc import Callable, Iterable

    Report = Callable[[str], None]
PROC_SYS = "/proc/sys"
IP_FORWARD = "net.ipv4.ip_forward"


def path_of(key: str, proc_sys: str = PROC_SYS) -> str:
    """fs.inotify.max_user_instances -> /proc/sys/fs/inotify/max_user_instances."""
    return os.path.join(proc_sys, *key.split("."))


def read(keys: Iterable[str], proc_sys: str = PROC_SYS) -> dict[str, int]:
    """The current value of each key; a key this kernel lacks is left out."""
    found = {}
    for key in keys:
        try:
            with open(path_of(key, proc_sys), encoding="ascii") as stream:
                found[key] = int(stream.read().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            continue
    return found


def write(key: str, value: int, proc_sys: str = PROC_SYS) -> None:
    with open(path_of(key, proc_sys), "w", encoding="ascii") as stream:
        stream.write(f"{value}\n")


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def pool_shortfalls(proc_sys: str = PROC_SYS) -> dict[str, tuple[int, int]]:
    """The kernel pools shared by every container that are smaller than the host needs."""
    return kernelpools.shortfalls(read(kernelpools.BYTES_PER, proc_sys), host_memory())


def raise_pools(report: Report, proc_sys: str = PROC_SYS) -> None:
    """Raise each pool that is too small, now; never lower one."""
    for key, (now, size) in pool_shortfalls(proc_sys).items():
        write(key, size, proc_sys)
        report(f"raised {key} from {now} to {size}")
