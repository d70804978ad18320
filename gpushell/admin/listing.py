"""`gpushell-admin list`: one row per student, plus warnings.

Gathering (LXC, cgroups, iptables, the lxcpath) returns plain data; the
renderers take that data and return text, so they are tested without a host.
A container whose numbers cannot be read gets a row with blanks, not a crash.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from typing import Any

from ..containers import cgroups
from ..containers.backend import MISSING, UNKNOWN, ContainerDriver
from ..containers.factory import backend_for
from ..core import chaincheck, expiry
from ..core.errors import GpushellError
from ..core.forward import NatTable
from ..core.registry import GpuSpec, Limits, Registry, User
from ..core.units import short_size
from ..system import iptables

SAMPLE_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class Row:
    user: str
    port: int
    ip: str
    container: str
    state: str
    gpus: GpuSpec
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    uptime_seconds: float | None = None
    # The registry's limits for the student (applied at the container's next start).
    limits: Limits | None = None
    expires: str | None = None  # the day the account expires, YYYY-MM-DD; None: never
    expires_in_days: int | None = None  # days from today to that day (0 or less: expired)
    member: str = ""  # the cluster member holding the container (backend lxd); "" on one host


@dataclasses.dataclass(frozen=True)
class Inventory:
    rows: list[Row]
    warnings: list[str]


# --- pure ------------------------------------------------------------------


def unregistered_containers(names: Iterable[str], reg: Registry) -> list[str]:
    """Containers in the lxcpath that are neither the template nor a student's."""
    known = {reg.template} | {user.container for user in reg.users.values()}
    return sorted(name for name in names if name not in known)


def warnings_for(reg: Registry, table: NatTable, container_names: Iterable[str]) -> list[str]:
    found = [
        f"container {name} in {reg.lxcpath if reg.cluster is None else 'the cluster'} is not in the registry"
        for name in unregistered_containers(container_names, reg)
    ]
    found += [
        problem.message
        for problem in chaincheck.problems(table, reg)
        if problem.kind in (chaincheck.ORPHAN, chaincheck.WRONG, chaincheck.DUPLICATE, chaincheck.UNTAGGED)
    ]
    return found


def gpus_text(gpus: GpuSpec) -> str:
    return gpus if isinstance(gpus, str) else ",".join(str(index) for index in gpus) or "none"


def size_text(count: int | None) -> str:
    return "-" if count is None else short_size(count)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def percent_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


HEADER = ("USER", "PORT", "IP", "STATE", "GPUS", "CPU%", "MEM", "UPTIME")


def expires_text(row: Row) -> str:
    """`-` (never), `2025-06-30`, `2025-06-30 (in 3 days)` in the last 14 days, `2025-06-30 (expired)`."""
    if row.expires is None or row.expires_in_days is None:
        return "-"
    if row.expires_in_days <= 0:
        return f"{row.expires} (expired)"
    if row.expires_in_days <= expiry.WARN_DAYS:
        return f"{row.expires} (in {row.expires_in_days} day{'' if row.expires_in_days == 1 else 's'})"
    return row.expires


def render_table(rows: Iterable[Row]) -> str:
    """The table; an EXPIRES column only where some student's account expires (a lab with semesters),
    a MEMBER column only on a cluster."""
    rows = list(rows)
    semesters = any(row.expires is not None for row in rows)
    cluster = any(row.member for row in rows)
    header = HEADER + (("EXPIRES",) if semesters else ()) + (("MEMBER",) if cluster else ())
    cells = [header] + [
        (
            row.user, str(row.port), row.ip, row.state, gpus_text(row.gpus),
            percent_text(row.cpu_percent), size_text(row.memory_bytes), duration_text(row.uptime_seconds),
        ) + ((expires_text(row),) if semesters else ()) + ((row.member,) if cluster else ())
        for row in rows
    ]  # fmt: skip
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    numeric = {1, 5, 6, 7}  # right-aligned columns
    lines = []
    for line in cells:
        parts = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def to_json(inventory: Inventory) -> str:
    def row_data(row: Row) -> dict[str, Any]:
        data = {field.name: getattr(row, field.name) for field in dataclasses.fields(row)}
        data["gpus"] = row.gpus if isinstance(row.gpus, str) else list(row.gpus)
        if row.limits is not None:
            data["limits"] = {
                "memory_bytes": row.limits.memory,
                "cpus": row.limits.cpus,
                "pids": row.limits.pids,
                "disk_bytes": row.limits.disk,
            }
        return data

    return json.dumps(
        {"users": [row_data(row) for row in inventory.rows], "warnings": inventory.warnings}, indent=2
    )


# --- gathering ---------------------------------------------------------------


def gather(
    reg: Registry,
    sample_seconds: float = SAMPLE_SECONDS,
    driver: ContainerDriver | None = None,
) -> Inventory:
    driver = driver or backend_for(reg)
    if reg.cluster is not None:
        return gather_cluster(reg, driver)
    users = sorted(reg.users.values(), key=lambda user: user.port)
    warnings: list[str] = []
    pids: dict[str, int] = {}
    states: dict[str, str] = {}
    for user in users:
        try:
            states[user.name], pid = driver.inspect(user.container)
        except Exception as exc:  # one broken container is a row with blanks
            states[user.name], pid = UNKNOWN, None
            warnings.append(f"cannot read the state of {user.container}: {exc}")
        if pid is not None:
            pids[user.name] = pid
    # One CPU sample for every container at once: the command waits once.
    before = {name: cgroups.cpu_nanoseconds(pid) for name, pid in pids.items()}
    began = time.monotonic()
    if pids:
        time.sleep(sample_seconds)
    after = {name: cgroups.cpu_nanoseconds(pid) for name, pid in pids.items()}
    elapsed = time.monotonic() - began
    rows = []
    today = expiry.today()
    for user in users:
        pid = pids.get(user.name)
        row = Row(user.name, user.port, user.address, user.container, states[user.name], user.gpus)
        row = with_expiry(dataclasses.replace(row, limits=user.limits), user, today)
        if pid is not None:
            row = dataclasses.replace(
                row,
                cpu_percent=cgroups.cpu_percent(before[user.name], after[user.name], elapsed),
                memory_bytes=cgroups.memory_bytes(pid),
                uptime_seconds=uptime_of(pid),
            )
        rows.append(row)
    warnings += warnings_for(reg, iptables.read_nat(), driver.names())
    return Inventory(rows, warnings)


def with_expiry(row: Row, user: User, today: expiry.Day) -> Row:
    if user.expires is None:
        return row
    return dataclasses.replace(
        row, expires=expiry.day_text(user.expires), expires_in_days=expiry.days_left(user.expires, today)
    )


def gather_cluster(reg: Registry, driver: ContainerDriver) -> Inventory:
    """The rows of a cluster's students, their states and members from one request to the engine.

    The engine's word on where a container is wins the MEMBER column; a
    registry that says otherwise is warned about (`move` keeps them equal).
    """
    from ..containers.lxd import LxdDriver

    assert isinstance(driver, LxdDriver)
    warnings: list[str] = []
    try:
        found = driver.states()
    except GpushellError as exc:
        found = {}
        warnings.append(f"cannot ask the cluster: {exc.log_message}")
    rows = []
    today = expiry.today()
    for user in sorted(reg.users.values(), key=lambda user: user.port):
        state, member = found.get(user.container, (MISSING if found else UNKNOWN, ""))
        if member and member != user.member:
            warnings.append(f"{user.name}: the registry says member {user.member}, the cluster says {member}")
        row = Row(user.name, user.port, user.address, user.container, state, user.gpus, limits=user.limits,
                  member=member or user.member)  # fmt: skip
        rows.append(with_expiry(row, user, today))
    warnings += warnings_for(reg, iptables.read_nat(), found)
    return Inventory(rows, warnings)


def uptime_of(pid: int) -> float | None:
    import psutil

    try:
        return max(0.0, time.time() - psutil.Process(pid).create_time())
    except psutil.Error:
        return None
