"""Which GPUs NVML shows in use, and whose processes use them: the tick's one look at the GPUs.

GPUs are named by their /dev/nvidiaN number (NVML's minor number), as
loans and the registry name them.  A GPU NVML cannot read counts as busy
(unknown counts as used: it is never taken back as idle for that).  A
process belongs to the student whose host id range holds its uids
(gpustatus.owner_of); a host process belongs to nobody.  Without NVML (no
bindings, no driver, no GPU) there is no figure at all: None.
"""

from __future__ import annotations

import contextlib

from ..core.value import Value
from . import gpustatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..core.model import Registry

PROC = "/proc"  # where processes' uids are read (tests point it at recorded ones)


class GpuUse(Value):
    """busy: the GPUs with any process (or unreadable); by_user: each student's GPUs with their process."""

    __slots__ = ("busy", "by_user")

    def __init__(self, busy: frozenset[int], by_user: dict[str, frozenset[int]]) -> None:
        self.busy, self.by_user = busy, by_user


def owners(reg: Registry) -> gpustatus.Owners:
    return gpustatus.Owners(
        {user.container: user.name for user in reg.users.values()},
        [(user.idmap, reg.idmap_size, user.name) for user in reg.users.values()],
    )


def read(nvml: Any, known: gpustatus.Owners, proc: str | None = None) -> GpuUse | None:
    """One pass over the GPUs; None when NVML cannot even count them."""
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError:
        return None
    busy: set[int] = set()
    by_user: dict[str, set[int]] = {}
    for index in range(count):
        minor = index
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            minor = int(nvml.nvmlDeviceGetMinorNumber(handle))
            pids = {
                int(process.pid)
                for get in (
                    nvml.nvmlDeviceGetComputeRunningProcesses,
                    nvml.nvmlDeviceGetGraphicsRunningProcesses,
                )
                for process in get(handle)
            }
        except nvml.NVMLError:
            busy.add(minor)
            continue
        if pids:
            busy.add(minor)
        for pid in pids:
            who = gpustatus.pid_owner(pid, known, proc or PROC)
            if who is not None:
                by_user.setdefault(who, set()).add(minor)
    return GpuUse(frozenset(busy), {user: frozenset(gpus) for user, gpus in by_user.items()})


def from_host(reg: Registry, load: Callable[[], Any | None] = gpustatus.load_nvml) -> GpuUse | None:
    """The GPUs' use now, NVML shut down after; None without NVML."""
    nvml = load()
    if nvml is None:
        return None
    try:
        return read(nvml, owners(reg))
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
