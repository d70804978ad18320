"""Who is using which GPU, and ending a student's own GPU process (helper side, root).

NVML (PyPI `nvidia-ml-py`, module `pynvml`) is imported only here and only
when asked (`load_nvml`); without it, or without a driver or GPU, the
answer is "no driver" and nothing else changes.  Every function that talks
to NVML takes the NVML object as an argument, so tests pass a stand-in
(there is no GPU or driver on the development machines).

A process is mapped to a student through its host uids: each container is
unprivileged with its own disjoint id range from the registry (user.idmap
.. user.idmap + idmap_size), and every process in it runs as ids of that
range, which no process of the host or of another container can take.  A
cgroup name cannot prove that: a container may name (or be moved into) a
cgroup that looks like another's.  NVML reports host PIDs, as the helper
runs in the host's PID namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal

from ..core import gputable
from ..core.errors import GpushellError
from ..system.files import read_text_or_none

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Reading = dict[str, object]

MAX_PID_TEXT = 7
MAX_STATUS = 64 * 1024  # /proc/PID/status is a few KiB


class Owners(dict[str, str]):
    """container -> registry user (for whoever wants names), plus each user's host id range."""

    def __init__(self, names: dict[str, str], ranges: list[tuple[int, int, str]]) -> None:
        super().__init__(names)
        self.ranges = sorted(ranges)  # (first id, count, user)

    def by_uid(self, uid: int) -> str | None:
        for first, count, user in self.ranges:
            if first <= uid < first + count:
                return user
        return None


# --- pure ---------------------------------------------------------------------------


def uids_of(proc_status: str) -> tuple[int, ...] | None:
    """The real, effective, saved and filesystem uids of a /proc/PID/status text, or None."""
    for line in proc_status.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()[1:]
            if len(fields) == 4 and all(field.isascii() and field.isdigit() for field in fields):
                return tuple(int(field) for field in fields)
            return None
    return None


def in_range(uids: tuple[int, ...] | None, first: int, count: int) -> bool:
    """Whether every uid lies in first .. first+count (a process of that container)."""
    return uids is not None and all(first <= uid < first + count for uid in uids)


def owner_of(uids: tuple[int, ...] | None, owners: Owners) -> str | None:
    """The registry user whose id range holds all of uids, or None (host, unknown, mixed)."""
    if uids is None:
        return None
    who = owners.by_uid(uids[0])
    return who if who is not None and all(owners.by_uid(uid) == who for uid in uids) else None


def parse_pid(text: str) -> int:
    """A PID sent on the helper's stdin: 1-7 ASCII digits and an optional newline."""
    digits = text[:-1] if text.endswith("\n") else text
    if not (digits.isascii() and digits.isdigit() and 1 <= len(digits) <= MAX_PID_TEXT and int(digits) > 0):
        shown = text[:20]
        raise GpushellError("not a process number", f"gpu-kill refused: bad PID text {shown!r}")
    return int(digits)


def classify(
    readings: list[Reading],
    caller: str,
    owner: Callable[[int], str | None],
    command: Callable[[int], str],
) -> list[Reading]:
    """Readings with each (pid, memory) turned into (kind, pid, name, memory) for gputable.encode.

    The caller's own processes keep PID and command name; another student's
    carry only the student's name; anything else, nothing but its memory.
    """
    out = []
    for reading in readings:
        procs = []
        for pid, memory in reading.get("procs", []):  # type: ignore[attr-defined]
            who = owner(pid)
            if who == caller:
                procs.append(("you", pid, command(pid), memory))
            elif who is not None:
                procs.append(("student", None, who, memory))
            else:
                procs.append(("other", None, "", memory))
        out.append({**reading, "procs": procs})
    return out


# --- NVML -------------------------------------------------------------------------


def load_nvml() -> Any | None:
    """The initialised pynvml module, or None when there is no NVML, driver or GPU."""
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def optional(nvml: Any, call: Callable[[], Any]) -> Any:
    """A reading some GPUs do not support (utilisation, temperature): None then."""
    try:
        return call()
    except nvml.NVMLError:
        return None


def text(value: object) -> str:
    """One of NVML's strings: older pynvml gives bytes."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _processes(nvml: Any, handle: Any) -> list[tuple[int, int | None]]:
    """(pid, GPU memory bytes or None) for compute and graphics processes, each PID once."""
    seen: dict[int, int | None] = {}
    for get in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
        for proc in get(handle):
            pid, memory = int(proc.pid), getattr(proc, "usedGpuMemory", None)
            # NVML gives None (or a huge sentinel) when it cannot tell the memory.
            memory = memory if isinstance(memory, int) and 0 <= memory < 1 << 60 else None
            known = seen.get(pid)
            seen[pid] = memory if known is None else max(known, memory or 0)
    return sorted(seen.items())


def read_gpu(nvml: Any, index: int) -> Reading:
    """One GPU's reading; an NVML error becomes an error reading, never an exception."""
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        procs = _processes(nvml, handle)
    except nvml.NVMLError as exc:
        return {"index": index, "error": str(exc) or type(exc).__name__}
    util = optional(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    temp = optional(nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    return {
        "index": index,
        "name": text(name),
        "util": util,
        "mem_used": int(memory.used),
        "mem_total": int(memory.total),
        "temp": temp,
        "procs": procs,
        "error": None,
    }


def gather(nvml: Any) -> list[Reading]:
    """Every GPU's reading; NVML's own failure to count them is a GpushellError."""
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as exc:
        raise GpushellError("the GPUs did not answer", f"nvmlDeviceGetCount failed: {exc}") from None
    return [read_gpu(nvml, index) for index in range(count)]


def gpu_pids(nvml: Any) -> set[int]:
    return {pid for reading in gather(nvml) for pid, _ in reading.get("procs", [])}  # type: ignore[attr-defined]


# --- reading and signalling processes ----------------------------------------------


def pid_uids(pid: int, proc: str = "/proc") -> tuple[int, ...] | None:
    text = read_text_or_none(f"{proc}/{pid}/status")
    return None if text is None else uids_of(text[:MAX_STATUS])


def pid_owner(pid: int, owners: dict[str, str], proc: str = "/proc") -> str | None:
    """The registry user whose container runs pid, or None (host, unknown container, gone)."""
    if not isinstance(owners, Owners):  # no id ranges known: nobody's, rather than a guess
        return None
    return owner_of(pid_uids(pid, proc), owners)


def pid_command(pid: int, proc: str = "/proc") -> str:
    return (read_text_or_none(f"{proc}/{pid}/comm") or "").strip()


def classified(nvml: Any, caller: str, owners: Callable[[], dict[str, str]]) -> list[Reading]:
    """Every GPU's reading, classified for caller (gputable.encode's input); NVML shut down after.

    owners (container -> registry user) is asked only once NVML has answered.
    """
    try:
        readings = gather(nvml)
    finally:
        _shutdown(nvml)
    known = owners()
    return classify(readings, caller, lambda pid: pid_owner(pid, known), pid_command)


def status_answer(nvml: Any | None, caller: str, owners: dict[str, str]) -> dict[str, object]:
    """The helper's answer to `gpus`."""
    if nvml is None:
        return {"state": gputable.NO_DRIVER}
    return gputable.encode(classified(nvml, caller, lambda: owners))


def _shutdown(nvml: Any) -> None:
    with contextlib.suppress(nvml.NVMLError):
        nvml.nvmlShutdown()


def kill(
    pid: int, first_id: int, id_count: int, load: Callable[[], Any | None] = load_nvml, proc: str = "/proc"
) -> dict[str, object]:
    """SIGTERM pid if its uids lie in the caller's container range and it uses a GPU; refuse otherwise.

    A pidfd pins the process first, so a PID reused between the checks and
    the signal cannot make it reach another process: the signal goes
    through the pidfd, and a liveness check through it after the status
    read proves that read was of the pinned process.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        raise GpushellError(
            f"process {pid} is not in your container", f"gpu-kill {pid}: no such process"
        ) from None
    try:
        uids = pid_uids(pid, proc)
        signal.pidfd_send_signal(pidfd, 0)  # still the process whose status was read
        if not in_range(uids, first_id, id_count):
            raise GpushellError(
                f"process {pid} is not in your container",
                f"gpu-kill {pid}: refused, uids {uids} outside {first_id}+{id_count}",
            )
        nvml = load()
        if nvml is None:
            raise GpushellError("no NVIDIA driver on this host", f"gpu-kill {pid}: refused, no NVML")
        try:
            using = gpu_pids(nvml)
        finally:
            _shutdown(nvml)
        if pid not in using:
            raise GpushellError(
                f"process {pid} is not using a GPU", f"gpu-kill {pid}: refused, not a GPU process"
            )
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    except ProcessLookupError:
        raise GpushellError(
            f"process {pid} is not in your container", f"gpu-kill {pid}: process ended"
        ) from None
    finally:
        os.close(pidfd)
    return {"state": "ok", "killed": pid}
