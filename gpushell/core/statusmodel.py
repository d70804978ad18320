"""The status page's content (pure): the GPUs, who holds them, the host, as one JSON-able document.

`page` takes what a tick saw (NVML's readings, the host's figures, the
loan book) and the history so far; it returns the history with this
minute added and the document that status.json holds and statushtml.py
draws.  Nothing here reads a clock, a file or a device.

Every GPU the host, NVML, the loans, the history or the registry names is
listed: without a driver a GPU shows no figures, but it is there.  Each
is in one state: lent (a loan holds it), assigned (a student has it as
their own), free (the lab lends it and nobody holds it) or unassigned.
Who holds it is a count; names only where the registry's
`status_page: {names: true}` says so, at most NAMES_SHOWN of them.
"""

from __future__ import annotations

import time

from . import gpuhistory, lending
from .gpuhistory import HOST_CPU, HOST_MEMORY, History, gpu_key
from .lending import lendable
from .value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .lending import LoanBook
    from .model import Registry

FORMAT = 1
STEP = 5  # minutes per plotted point: 288 points a day
NAMES_SHOWN = 20
LENT, ASSIGNED, FREE, UNASSIGNED = "lent", "assigned", "free", "unassigned"


class GpuReading(Value):
    """One GPU as NVML showed it: numbered by its /dev/nvidiaN; None where NVML gave no figure."""

    __slots__ = ("gpu", "memory_total", "memory_used", "name", "util")

    def __init__(
        self,
        gpu: int,
        name: str | None = None,
        util: int | None = None,  # percent of the last sample period the GPU was busy
        memory_used: int | None = None,  # bytes
        memory_total: int | None = None,
    ) -> None:
        self.gpu, self.name, self.util = gpu, name, util
        self.memory_used, self.memory_total = memory_used, memory_total


class HostFigures(Value):
    """The host now: CPU seconds (busy, total) since boot, load, memory and disk bytes, students online."""

    __slots__ = (
        "cpu_times", "cpus", "disk_total", "disk_used", "load", "logged_in", "memory_total", "memory_used",
        "running",
    )  # fmt: skip

    def __init__(
        self,
        cpu_times: tuple[float, float] | None = None,
        cpus: int | None = None,
        load: float | None = None,  # the 1-minute load average
        memory_used: int | None = None,
        memory_total: int | None = None,
        disk_used: int | None = None,  # of the filesystem holding the containers (lxcpath)
        disk_total: int | None = None,
        running: int | None = None,  # students' containers running
        logged_in: int | None = None,  # students with a session on the host
    ) -> None:
        self.cpu_times, self.cpus, self.load = cpu_times, cpus, load
        self.memory_used, self.memory_total = memory_used, memory_total
        self.disk_used, self.disk_total = disk_used, disk_total
        self.running, self.logged_in = running, logged_in


def percent(part: float | None, whole: float | None) -> int | None:
    if part is None or not whole or whole <= 0:
        return None
    return max(0, min(100, round(100 * part / whole)))


def cpu_use(before: tuple[float, float] | None, now: tuple[float, float] | None) -> int | None:
    """The CPU use between two looks at the CPU seconds (busy, total); None without both, or after a boot."""
    if before is None or now is None or now[1] <= before[1] or now[0] < before[0]:
        return None
    return percent(now[0] - before[0], now[1] - before[1])


def figures(
    readings: Iterable[GpuReading], host: HostFigures, cpu: int | None, server: str = ""
) -> dict[str, int | None]:
    """This minute's percentages for the history (one server's GPUs; the host's own figures)."""
    found = {HOST_CPU: cpu, HOST_MEMORY: percent(host.memory_used, host.memory_total)}
    for reading in readings:
        found[gpu_key(reading.gpu, "util", server)] = reading.util
        found[gpu_key(reading.gpu, "memory", server)] = percent(reading.memory_used, reading.memory_total)
    return found


def page(
    reg: Registry,
    book: LoanBook,
    history: History,
    readings: Mapping[str, Iterable[GpuReading]],
    host: HostFigures,
    host_gpus: Mapping[str, Iterable[int]],
    now: float,
) -> tuple[History, dict[str, object]]:
    """The history with this minute's figures, and the status document.

    readings and host_gpus are by server, as lending.members names them:
    "" on one host, each member on a cluster (its GPUs numbered on it).
    """
    minute = int(now // 60)
    cpu = cpu_use(history.cpu, host.cpu_times)
    servers = lending.members(reg)  # one host: "" with every student
    found: dict[str, int | None] = {}
    for server in servers:
        found.update(figures(readings.get(server, ()), host, cpu, server))
    history = gpuhistory.record(history, minute, found, host.cpu_times)
    gpus: list[dict[str, object]] = []
    for server, users in sorted(servers.items()):
        part, part_book = lending.on_member(reg, book, users) if reg.cluster is not None else (reg, book)
        gpus += _server_gpus(
            part, part_book, history, readings.get(server, ()), host_gpus.get(server, ()), server, minute
        )
    document: dict[str, object] = {
        "format": FORMAT,
        "host": reg.hostname,
        "time": int(now),
        "updated": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(now)),
        "step_minutes": STEP,
        "host_figures": _host(reg, history, host, cpu, minute),
        "lending": {"on": reg.lending is not None, "waiting": len(book.queue)},
        "names_shown": reg.status_page.names,
        "gpus": gpus,
    }
    return history, document


def _server_gpus(
    reg: Registry,
    book: LoanBook,
    history: History,
    readings: Iterable[GpuReading],
    host_gpus: Iterable[int],
    server: str,
    minute: int,
) -> list[dict[str, object]]:
    """One server's GPU entries (reg and book: its students alone), lowest number first."""
    read = {reading.gpu: reading for reading in readings}
    host_set = frozenset(host_gpus)
    # A member's GPUs are the registry's own count of them; one host's may lack nodes (no driver).
    named = _registry_gpus(reg) if not server else set()
    numbers = sorted(host_set | set(read) | book.lent | named | _tracked_gpus(history, server))
    holders = _holders(reg, book, numbers, lendable(reg, host_set))
    return [_gpu(reg, history, read.get(gpu), gpu, holders[gpu], server, minute) for gpu in numbers]


def _host(
    reg: Registry, history: History, host: HostFigures, cpu: int | None, minute: int
) -> dict[str, object]:
    return {
        "cpu_percent": cpu,
        "cpu_plot": gpuhistory.buckets(history.tracks.get(HOST_CPU), minute, STEP),
        "cpus": host.cpus,
        "load": None if host.load is None else round(host.load, 2),
        "memory_used": host.memory_used,
        "memory_total": host.memory_total,
        "memory_plot": gpuhistory.buckets(history.tracks.get(HOST_MEMORY), minute, STEP),
        "disk_used": host.disk_used,
        "disk_total": host.disk_total,
        "students": len(reg.users),
        "front_door": reg.cluster is not None,  # a cluster's: its CPU and memory, not the members'
        "containers_running": host.running,
        "logged_in": host.logged_in,
    }


Holders = tuple[str, list[str], int | None]  # the state, the students by name, a loan's end


def _gpu(
    reg: Registry,
    history: History,
    reading: GpuReading | None,
    gpu: int,
    holders: Holders,
    server: str,
    minute: int,
) -> dict[str, object]:
    state, names, until = holders
    found: dict[str, object] = {
        "gpu": gpu,
        "member": server or None,
        "name": None if reading is None else reading.name,
        "reading": reading is not None,
        "util": None if reading is None else reading.util,
        "memory_used": None if reading is None else reading.memory_used,
        "memory_total": None if reading is None else reading.memory_total,
        "util_plot": gpuhistory.buckets(history.tracks.get(gpu_key(gpu, "util", server)), minute, STEP),
        "memory_plot": gpuhistory.buckets(history.tracks.get(gpu_key(gpu, "memory", server)), minute, STEP),
        "state": state,
        "students": len(names),
        "until": until,
    }
    if reg.status_page.names:
        found["names"] = names[:NAMES_SHOWN]
    return found


def _holders(reg: Registry, book: LoanBook, gpus: list[int], free: frozenset[int]) -> dict[int, Holders]:
    """Each GPU's state and holders: its loans first, else the students who have it as their own."""
    everyone = sorted(user.name for user in reg.users.values() if user.gpus == "all")
    owners: dict[int, list[str]] = {}
    for user in reg.users.values():
        if not isinstance(user.gpus, str):
            for gpu in user.gpus:
                owners.setdefault(gpu, []).append(user.name)
    found: dict[int, Holders] = {}
    for gpu in gpus:
        loans = [loan for loan in book.loans if loan.gpu == gpu]
        own = sorted(everyone + owners.get(gpu, []))
        if loans:
            found[gpu] = (LENT, sorted({loan.user for loan in loans}), int(max(loan.ends for loan in loans)))
        elif own:
            found[gpu] = (ASSIGNED, own, None)
        else:
            found[gpu] = (FREE if gpu in free else UNASSIGNED, [], None)
    return found


def _registry_gpus(reg: Registry) -> set[int]:
    """The GPU numbers the registry names: a student's own, or lent ones."""
    named = {gpu for user in reg.users.values() if not isinstance(user.gpus, str) for gpu in user.gpus}
    if reg.lending is not None and not isinstance(reg.lending.gpus, str):
        named.update(reg.lending.gpus)
    return named


def _tracked_gpus(history: History, server: str) -> set[int]:
    """The server's GPUs with figures in the last day (one NVML no longer sees stays listed)."""
    found = set()
    for key in history.tracks:
        owner, gpu, _what = gpuhistory.gpu_of(key)
        if gpu is not None and owner == server:
            found.add(gpu)
    return found
