"""A cluster member's GPU report (pure): what its NVML showed, as the front door reads it.

The front door has no GPU and no view of a member's processes; the engine's
API has no GPU figures.  So each member publishes its own: root on the
member runs `gpushell-admin publish-gpus` (its timer, every 20 seconds),
which reads NVML there and writes this report into the member's own entry
in the cluster's database, the member config key REPORT_KEY.  The front
door reads every member's report in one request (`/1.0/cluster/members`,
which its restricted certificate may read), and its tick
turns them into the banner's GPU lines and the status page.

Only a member's root can write the key (through its engine's unix socket);
a container cannot reach it.  The front door still parses it strictly and
bounded: a report that does not parse is no report.

Processes are named by their container (the engine's instance whose host
id range holds their uids, as on one host) and summed per container, never
by PID; "" stands for the host's processes and those no instance owns.
GPUs are numbered by their /dev/nvidiaN on the member, as the registry
numbers a member's GPUs.
"""

from __future__ import annotations

import json

from .statusmodel import GpuReading
from .value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import TypeGuard

REPORT_KEY = "user.gpushell.gpus"
FORMAT = 1
OK, NO_DRIVER, ERROR = "ok", "no-driver", "error"
STATES = (OK, NO_DRIVER, ERROR)
MAX_TEXT = 256 * 1024  # bytes of one report: 64 GPUs with 64 processes each fit in a quarter of it
MAX_GPUS = 64
MAX_PROCS = 64  # containers per GPU (the member sums each one's processes); more are left out
MAX_NAME = 128
MAX_FIGURE = 2**60  # bytes, percent, degrees: anything larger is not a reading
STALE_AFTER = 180  # seconds: an older report's figures are not the GPUs' use now (its timer stopped)


class ReportedGpu(Value):
    """One GPU of a member: None where NVML gave no figure; error set when the GPU did not answer."""

    __slots__ = ("error", "gpu", "memory_total", "memory_used", "name", "procs", "temp", "util", "uuid")

    def __init__(
        self,
        gpu: int,
        name: str | None = None,
        util: int | None = None,
        memory_used: int | None = None,
        memory_total: int | None = None,
        temp: int | None = None,
        procs: tuple[tuple[str, int | None], ...] = (),  # (container or "", its processes' memory)
        error: str | None = None,
        uuid: str | None = None,  # NVML's, as nvidia-smi inside a container names the GPU
    ) -> None:
        self.gpu, self.name, self.util, self.temp = gpu, name, util, temp
        self.memory_used, self.memory_total = memory_used, memory_total
        self.procs, self.error, self.uuid = procs, error, uuid


class GpuReport(Value):
    """A member's GPUs when NVML was asked (taken, epoch seconds); state ok, no-driver or error; the
    loaded kernel module's version (driver), for `driver sync`."""

    __slots__ = ("driver", "gpus", "state", "taken")

    def __init__(
        self, taken: int, state: str, gpus: tuple[ReportedGpu, ...] = (), driver: str | None = None
    ) -> None:
        self.taken, self.state, self.gpus, self.driver = taken, state, gpus, driver

    def fresh(self, now: float) -> bool:
        """Whether its figures are the GPUs' use now (a clock a little ahead is fine)."""
        return -STALE_AFTER <= now - self.taken <= STALE_AFTER


def module(report: GpuReport | None, now: float) -> str | None:
    """The member's loaded driver module version, from a fresh report; None when there is none to match."""
    return report.driver if report is not None and report.fresh(now) else None


# --- the member's side -------------------------------------------------------------


def encode(report: GpuReport) -> str:
    """The report as the member config value: compact JSON, bounded as decode bounds it."""
    gpus = []
    for gpu in report.gpus[:MAX_GPUS]:
        procs = [[container[:MAX_NAME], memory] for container, memory in gpu.procs[:MAX_PROCS]]
        gpus.append(
            {
                "gpu": gpu.gpu,
                "name": None if gpu.name is None else gpu.name[:MAX_NAME],
                "util": gpu.util,
                "memory_used": gpu.memory_used,
                "memory_total": gpu.memory_total,
                "temp": gpu.temp,
                "procs": procs,
                "error": None if gpu.error is None else gpu.error[:MAX_NAME],
                "uuid": None if gpu.uuid is None else gpu.uuid[:MAX_NAME],
            }
        )
    body = {"format": FORMAT, "taken": report.taken, "state": report.state, "gpus": gpus}
    if report.driver is not None:
        body["driver"] = report.driver
    return json.dumps(body, separators=(",", ":"))


# --- the front door's side ---------------------------------------------------------


def decode(text: object) -> GpuReport | None:
    """A report from its member config value; None for anything that is not one."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("format") != FORMAT or body.get("state") not in STATES:
        return None
    taken, listed = _figure(body.get("taken")), body.get("gpus")
    if taken is None or not isinstance(listed, list) or len(listed) > MAX_GPUS:
        return None
    gpus = [_gpu(item) for item in listed]
    driver = body.get("driver")  # absent from an older member's report, and where no module is loaded
    if any(gpu is None for gpu in gpus) or not (driver is None or _version(driver)):
        return None
    return GpuReport(taken, body["state"], tuple(gpu for gpu in gpus if gpu is not None), driver)


def of_member(entry: dict[str, object]) -> GpuReport | None:
    """The report in one of the engine's `/1.0/cluster/members` entries; None where it has none."""
    config = entry.get("config")
    return decode(config.get(REPORT_KEY) if isinstance(config, dict) else None)


def _gpu(item: object) -> ReportedGpu | None:
    if not isinstance(item, dict):
        return None
    number, procs = _figure(item.get("gpu")), item.get("procs")
    if number is None or not isinstance(procs, list) or len(procs) > MAX_PROCS:
        return None
    pairs = []
    for proc in procs:
        if not (isinstance(proc, list) and len(proc) == 2 and _text(proc[0]) is not None):
            return None
        pairs.append((str(proc[0]), _figure(proc[1])))
    return ReportedGpu(
        number,
        _text(item.get("name")),
        _figure(item.get("util")),
        _figure(item.get("memory_used")),
        _figure(item.get("memory_total")),
        _figure(item.get("temp")),
        tuple(pairs),
        _text(item.get("error")),
        _text(item.get("uuid")),  # absent from an older member's report: None
    )


def _figure(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FIGURE:
        return None
    return value


def _version(value: object) -> TypeGuard[str]:
    """A kernel module version as driverfiles parses one: 550.54.14."""
    parts = value.split(".") if isinstance(value, str) and len(value) <= 32 else []
    return bool(parts) and all(part.isascii() and part.isdigit() for part in parts)


def _text(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_NAME or not value.isprintable():
        return None
    return value


def banner_table(report: GpuReport, students: dict[str, str]) -> list[dict[str, object]]:
    """The report's GPUs as gpucache.snapshot takes them: each process a student's (by the
    registry's container -> user) or "other"; counts only reach the banner."""
    table: list[dict[str, object]] = []
    for gpu in report.gpus:
        if gpu.error is not None:
            table.append({"index": gpu.gpu, "error": gpu.error})
            continue
        procs = [
            ("student", None, students[container], memory)
            if container in students
            else ("other", None, "", memory)
            for container, memory in gpu.procs
        ]
        table.append(
            {
                "index": gpu.gpu,
                "name": gpu.name,
                "util": gpu.util,
                "mem_used": gpu.memory_used,
                "mem_total": gpu.memory_total,
                "temp": gpu.temp,
                "procs": procs,
            }
        )
    return table


def readings(report: GpuReport | None, now: float) -> list[GpuReading]:
    """The status page's figures of a member's GPUs; none from a stale report (its plots pause)."""
    if report is None or not report.fresh(now):
        return []
    return [
        GpuReading(gpu.gpu, gpu.name, gpu.util, gpu.memory_used, gpu.memory_total)
        for gpu in report.gpus
        if gpu.error is None
    ]


# --- lending on the front door: a member's GPUs in use, a container's processes on them ----------


def busy(report: GpuReport | None, now: float, gpus: Iterable[int]) -> frozenset[int] | None:
    """Which of the member's GPUs lending counts as in use: all but those a fresh report shows
    quiet (no process, and an answer); None without a fresh report that read NVML (unknown counts
    as used, as on one host without NVML)."""
    if not _current(report, now):
        return None
    quiet = {gpu.gpu for gpu in report.gpus if not gpu.procs and gpu.error is None}
    return frozenset(gpus) - quiet


def shows(
    report: GpuReport | None, now: float, container: str, gpus: Iterable[int], since: float = 0.0
) -> bool | None:
    """Whether a fresh report taken after `since` shows the container's processes on one of the GPUs.

    None where it cannot tell: no such report, or a GPU it does not list,
    that did not answer, or whose containers were cut at MAX_PROCS.
    """
    if not _current(report, now) or report.taken <= since:
        return None
    listed = {gpu.gpu: gpu for gpu in report.gpus}
    seen = False
    for number in gpus:
        gpu = listed.get(number)
        if gpu is None or gpu.error is not None or len(gpu.procs) >= MAX_PROCS:
            return None
        seen = seen or any(name == container for name, _memory in gpu.procs)
    return seen


def outlived(report: GpuReport | None, now: float, container: str, gpu: int, since: float) -> bool | None:
    """After the GPU left the container without a restart (at `since`): whether a process of the
    container kept it.  True where a report taken after `since` shows one there, or where none can
    tell within STALE_AFTER seconds (unknown counts as used); False where one shows none; None:
    wait for the member's next report."""
    shown = shows(report, now, container, (gpu,), since)
    if shown is None and now - since <= STALE_AFTER:
        return None
    return shown is not False


def _current(report: GpuReport | None, now: float) -> TypeGuard[GpuReport]:
    return report is not None and report.state == OK and report.fresh(now)


# --- `gpus` on a cluster: the container's own view, numbered and completed by the report --------


def with_neighbours(
    rows: list[dict[str, object]],
    report: GpuReport | None,
    now: float,
    container: str,
    students: dict[str, str],
) -> list[dict[str, object]] | None:
    """nvidia-smi's rows from inside the container (smi.parse) numbered as the member numbers its GPUs,
    with the other containers' processes on them from a fresh report: a student's by name (the
    registry's container -> user), anyone else's as other.  None unless the report names every
    row's GPU (by its UUID): then the container's own view stands alone."""
    if not _current(report, now):
        return None
    by_uuid = {gpu.uuid: gpu for gpu in report.gpus if gpu.uuid is not None and gpu.error is None}
    matched = [by_uuid.get(str(row.get("uuid"))) for row in rows]
    if None in matched:
        return None
    completed = []
    for row, gpu in zip(rows, matched, strict=True):
        assert gpu is not None
        others = [
            ("student", None, students[name], memory) if name in students else ("other", None, "", memory)
            for name, memory in gpu.procs
            if name != container
        ]
        completed.append(row | {"index": gpu.gpu, "procs": [*row["procs"], *others]})  # type: ignore[misc]
    return completed
