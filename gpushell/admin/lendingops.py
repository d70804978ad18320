"""GPU lending, the administrator's side: the minute's tick, revoking a loan, loans back after a boot.

The decisions are core/lending.py's, the book is system/loanstore.py's and
the devices go in and out through helper/loans.py (give, take), as for a
student's own borrow and return.  This module carries the decisions out:

- `tick` (every minute): one look at the GPUs (NVML, where there is one),
  then, under the loans lock, lending.tick's decisions and the new book;
  then, outside it: the lab's notify_command for each loan warned, the
  devices taken from loans that ended (their processes ended: SIGTERM,
  GRACE seconds, SIGKILL), the devices given for loans from the line,
  and one usage sample per student holding a GPU (samples.py); last, the
  status page (statuspage.py) from the same look at the GPUs.
- `revoke`: one loan ended by the administrator, as an expiry ends it.
- `restore` (apply, after the containers started): loans that ended while
  the host was down dropped, the others' GPUs back in running containers.

A loan's idle time is the book's own `last_used` (lending.tick moves it
whenever NVML shows a process on the GPU, or has no figures): no second
record of it is kept.  Ticks made after a boot count no idle time from
before it (`_since_boot`), whichever of tick and apply runs first.

The book is written before any device moves.  A loan ended in the book
whose device could not be taken yet (the student's lock busy, a process
stuck in the driver, or this process killed) stays in `taking.json` in
the state directory, written before the book, and every later tick tries
again until its device is gone; so an ended loan never leaves a device
behind for good.  A loan given in the book whose device did not reach
the container (a helper killed between the two) gets it from the next
ticks (REGIVE) or from the container's next start.
"""

from __future__ import annotations

import contextlib
import json
import time

from ..containers.factory import backend_for
from ..core import gpureport, lending
from ..core.durations import duration_text
from ..core.errors import ExitStatus, GpushellError
from ..core.lending import Loan, LoanBook
from ..gpu import gpucache, gpudevices, gpufigures, gpustatus, gpuuse
from ..helper import loans, loanwatch, services
from ..system import audit, loanstore, registry_store
from ..system.files import read_format, read_private, write_atomically
from ..system.lock import admin_busy, locked
from ..system.runner import MESSAGE_OUTPUT, run
from . import samples, statuspage
from .loansview import clock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    from ..containers.backend import ContainerDriver
    from ..core.gpureport import GpuReport
    from ..core.model import Registry, User
    from ..core.paths import Paths
    from ..core.statusmodel import GpuReading
    from ..gpu.gpudevices import Node

    Report = Callable[[str], None]

GRACE = 10.0  # seconds between SIGTERM and SIGKILL for the processes on a GPU taken back
USER_WAIT = 10.0  # seconds a tick waits for a student's lock (a login may hold it); else the next tick
TICK_WAIT = 120.0  # seconds a tick, revoke or apply waits for another one to finish
NOTIFY_TIMEOUT = 10.0  # seconds the lab's notify_command may run
REGIVE = 180.0  # seconds: loans this young get their devices again at each tick (idempotent)
TAKING_FORMAT = 1
MAX_TAKING = 1024 * 1024
BUSY = "another gpushell-admin tick, loans revoke or apply is working on the loans; try again in a moment"


def tick_lock(paths: Paths) -> str:
    """One tick (or revoke, or apply's loans step) at a time: they share taking.json."""
    return f"{paths.run_dir}/tick.lock"


def tick_stamp(paths: Paths) -> str:
    """When a tick last finished, in epoch seconds: doctor's evidence that loans end (this boot only)."""
    return f"{paths.run_dir}/tick.stamp"


def last_tick(paths: Paths) -> float | None:
    """When a tick last finished since boot; None when none has."""
    text = read_private(tick_stamp(paths), 64)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def taking_path(paths: Paths) -> str:
    return f"{paths.state_dir}/taking.json"


def host_gpus(nodes: Iterable[Node]) -> tuple[int, ...]:
    return tuple(sorted(node.gpu for node in nodes if node.gpu is not None))


# --- the tick --------------------------------------------------------------------------


def tick(
    paths: Paths,
    report: Report,
    warn: Report,
    now: float | None = None,
    driver: ContainerDriver | None = None,
    load_nvml: Callable[[], Any | None] = gpustatus.load_nvml,
) -> int:
    """One minute of lending and sampling; returns how many devices could not be moved (retried later)."""
    with locked(tick_lock(paths), TICK_WAIT, BUSY):
        now = time.time() if now is None else now
        reg = registry_store.load_all(paths)
        driver = driver or backend_for(reg)
        nodes = gpudevices.scan(reg.gpu_devices)
        host = host_gpus(nodes)
        use, readings = look(reg, load_nvml)
        reports = member_reports(paths, reg, driver, warn)  # a cluster's GPUs: each member's own report
        held = book = loanstore.read(paths)  # no loans and no lending: the book is not touched
        given: list[Loan] = []
        if reg.lending is not None or held.loans or held.queue:
            held, decided = _decide(paths, reg, now, host, busy(reg, use, reports, now), warn)
            book = decided.book
            _tell(decided, now, report)
            _notify(reg, decided.warned, warn)
            given = _to_give(decided, now)
        failures = finish_taking(paths, reg, driver, nodes, warn, reports, now)  # this tick's, any before
        if reg.cluster is not None:
            loanwatch.check(paths, reg, reports, now, _restarter(paths, driver), report, warn)
        failures += _give(paths, reg, driver, nodes, given, warn)
        try:  # the minute's samples: what was held during it, the book as the tick found it
            samples.append(paths, samples.gather(reg, held, driver, use, host, now))
        except (OSError, GpushellError) as exc:
            warn(f"usage samples not written: {_why(exc)}")
        try:  # the page shows the book after this tick's changes
            by_server = {"": readings} | {
                member: gpureport.readings(report, now) for member, report in reports.items()
            }
            statuspage.publish(paths, reg, book, driver, by_server, lending.server_gpus(reg, host), now, warn)
        except (OSError, GpushellError) as exc:
            warn(statuspage.not_written(exc))
        write_atomically(tick_stamp(paths), f"{now}\n", 0o644)
        return failures


def member_reports(
    paths: Paths, reg: Registry, driver: ContainerDriver, warn: Report
) -> dict[str, GpuReport | None]:
    """On a cluster, every member's GPU report (gpureport.py), and the banners' snapshots made from
    them; nothing on one host.  Members that cannot be read leave the banners' last snapshots."""
    if reg.cluster is None:
        return {}
    from ..containers.lxd import LxdDriver

    assert isinstance(driver, LxdDriver)
    try:
        reports = driver.gpu_reports()
    except GpushellError as exc:
        warn(f"the members' GPU reports could not be read: {_why(exc)}")
        return {}
    try:
        gpucache.write_members(paths, reg, reports)
    except OSError as exc:
        warn(f"the banners' GPU lines not written: {_why(exc)}")
    return reports


def busy(
    reg: Registry, use: gpuuse.GpuUse | None, reports: Mapping[str, GpuReport | None], now: float
) -> dict[str, frozenset[int] | None]:
    """The GPUs lending counts as in use, by server: one host's from NVML, each member's from its report."""
    found = {"": None if use is None else use.busy}
    for name, member in reg.cluster.members.items() if reg.cluster is not None else ():
        found[name] = gpureport.busy(reports.get(name), now, member.gpus)
    return found


def look(reg: Registry, load_nvml: Callable[[], Any | None]) -> tuple[gpuuse.GpuUse | None, list[GpuReading]]:
    """The tick's one look at the GPUs: who uses them (lending, samples), what they show (the status page)."""
    nvml = load_nvml()
    if nvml is None:
        return None, []
    try:
        readings = gpufigures.read(nvml) if reg.status_page.enabled else []
        return gpuuse.read(nvml, gpuuse.owners(reg)), readings
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _decide(
    paths: Paths,
    reg: Registry,
    now: float,
    host: tuple[int, ...],
    busy: dict[str, frozenset[int] | None],
    warn: Report,
) -> tuple[LoanBook, lending.Tick]:
    """The book as found and the tick's decisions; the new book written, the ended loans noted first."""
    found: list[LoanBook] = []
    boot = boot_time()

    def change(book: LoanBook) -> tuple[LoanBook, lending.Tick]:
        found.append(book)
        decided = lending.tick_members(
            reg, _since_boot(book, boot), now, lending.server_gpus(reg, host), busy
        )
        if decided.ended:
            _note_taking(paths, [(loan.user, loan.gpu) for loan in decided.ended], warn)
        return decided.book, decided

    decided = loanstore.update(paths, change)
    return found[0], decided


def boot_time(stat_path: str = "/proc/stat") -> float:
    """When the host booted (epoch seconds): /proc/stat's btime; 0 when unknown."""
    for line in (read_private(stat_path, 1 << 20) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "btime" and value.strip().isdigit():
            return float(value.strip())
    return 0.0


def _since_boot(book: LoanBook, boot: float) -> LoanBook:
    """Nobody could use a GPU while the host was down: idle time counts from the boot at the earliest."""
    if not any(loan.last_used < boot for loan in book.loans):
        return book
    return LoanBook([loan.replace(last_used=max(loan.last_used, boot)) for loan in book.loans], book.queue)


def _tell(decided: lending.Tick, now: float, report: Report) -> None:
    """A line for the administrator (and the audit log) per decision; nothing on a quiet minute."""
    lines: list[tuple[str, str, str]] = []
    for loan in decided.expired:
        lines.append((loan.user, "loan-expired", f"expired: {loan.user}'s loan of GPU {loan.gpu}"))
    for loan in decided.idle:
        idle = duration_text(now - loan.last_used)
        lines.append(
            (loan.user, "loan-idle", f"returned idle: {loan.user}'s GPU {loan.gpu}, no process for {idle}")
        )
    for loan in decided.revoked:
        why = "the registry no longer lends it to them"
        lines.append((loan.user, "loan-revoked", f"ended: {loan.user}'s loan of GPU {loan.gpu} ({why})"))
    for loan in decided.warned:
        lines.append(
            (
                loan.user,
                "loan-warned",
                f"warned: {loan.user}'s GPU {loan.gpu} goes back at {clock(loan.ends)}",
            )
        )
    for loan in decided.granted:
        lines.append(
            (
                loan.user,
                "loan-granted",
                f"lent: GPU {loan.gpu} to {loan.user} (from the line) until {clock(loan.ends)}",
            )
        )
    for waiter in decided.dropped:
        text = f"dropped from the line: {waiter.user} (no longer allowed {waiter.count} GPU(s))"
        lines.append((waiter.user, "loan-dropped", text))
    for user, action, text in lines:
        audit.record(user, action, "ok", text)
        report(text)


def _notify(reg: Registry, warned: Iterable[Loan], warn: Report) -> None:
    """The lab's notify_command for each loan warned; its failure is a warning, nothing more."""
    for loan in warned:
        argv = lending.notify_argv(reg, loan)
        if not argv:
            continue
        try:
            result = run(argv, check=False, timeout=NOTIFY_TIMEOUT, max_output=MESSAGE_OUTPUT)
        except GpushellError as exc:
            warn(f"notify_command for {loan.user} (GPU {loan.gpu}): {_why(exc)}")
            continue
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            shown = f": {detail[-1][:200]}" if detail else ""
            warn(f"notify_command for {loan.user} (GPU {loan.gpu}) exited {result.returncode}{shown}")


def _to_give(decided: lending.Tick, now: float) -> list[Loan]:
    """Loans from the line, and loans young enough that a killed helper may not have given them yet."""
    young = [loan for loan in decided.book.loans if loan.started >= now - REGIVE]
    return list({(loan.user, loan.gpu): loan for loan in (*decided.granted, *young)}.values())


# --- moving devices ----------------------------------------------------------------


def _give(
    paths: Paths,
    reg: Registry,
    driver: ContainerDriver,
    nodes: tuple[Node, ...],
    given: Iterable[Loan],
    warn: Report,
) -> int:
    """Each loan's devices into its student's running container (a stopped one gets them at its start)."""
    by_user: dict[str, list[int]] = {}
    for loan in given:
        by_user.setdefault(loan.user, []).append(loan.gpu)
    failures = 0
    for name, gpus in sorted(by_user.items()):
        user = reg.users.get(name)
        if user is None:
            continue
        try:
            with locked(paths.user_lock(name), USER_WAIT, admin_busy(name)):
                loans.give(services.Context(paths, reg, driver), user, tuple(sorted(gpus)), nodes)
        except GpushellError as exc:
            failures += 1
            warn(f"GPU {_listed(gpus)} not put into {name}'s container yet: {_why(exc)}")
    return failures


def finish_taking(
    paths: Paths,
    reg: Registry,
    driver: ContainerDriver,
    nodes: tuple[Node, ...],
    warn: Report,
    reports: Mapping[str, GpuReport | None] | None = None,
    now: float | None = None,
) -> int:
    """Take every ended loan's device out of its container (taking.json); returns how many must wait.

    On a cluster, reports (each member's) spare the restart where they show none of the
    container's processes on the GPU; the GPU is watched instead (loanwatch.py)."""
    pending = read_taking(paths, warn)
    if not pending:
        return 0
    book, now = loanstore.read(paths), time.time() if now is None else now
    left, watched = [], []
    for name, gpu in pending:
        user = reg.users.get(name)
        if user is None or lending.holds(user, book, gpu):
            continue  # no container of theirs to take it from; or theirs again: lent since, or their own
        quiet = loanwatch.quiet(reg, reports or {}, now, user, (gpu,))
        try:
            with locked(paths.user_lock(name), USER_WAIT, admin_busy(name)):
                loans.take(
                    services.Context(paths, reg, driver), user, (gpu,), nodes, GRACE, restart=not quiet
                )
        except GpushellError as exc:
            left.append((name, gpu))
            warn(f"GPU {gpu} not taken from {name}'s container yet (next tick tries again): {_why(exc)}")
            continue
        if quiet:
            watched.append(loanwatch.taken(user, gpu))
    loanwatch.add(paths, watched, warn)  # before taking.json forgets them: a kill between never loses one
    if left != pending:
        write_taking(paths, left)
    return len(left)


def _restarter(paths: Paths, driver: ContainerDriver) -> Callable[[User], bool]:
    """A watched container's restart, under its student's lock (a login may hold it: next tick)."""
    from ..containers.lxd import LxdDriver

    assert isinstance(driver, LxdDriver)

    def restart(user: User) -> bool:
        with locked(paths.user_lock(user.name), USER_WAIT, admin_busy(user.name)):
            return driver.restart_running(user.container)

    return restart


def read_taking(paths: Paths, warn: Report) -> list[tuple[str, int]]:
    """The (user, GPU) pairs whose devices are still to be taken; a damaged file is warned about and empty."""
    try:
        data = read_format(taking_path(paths), MAX_TAKING, TAKING_FORMAT)
        if data is None:
            return []
        pairs = [(item["user"], item["gpu"]) for item in data["taking"]]
        if not all(isinstance(user, str) and type(gpu) is int for user, gpu in pairs):
            raise ValueError("a user or GPU of the wrong kind")
    except (ValueError, TypeError, KeyError) as exc:
        warn(f"{taking_path(paths)} is damaged ({exc}); ignored: check that lent GPUs left their containers")
        return []
    return pairs


def write_taking(paths: Paths, pending: list[tuple[str, int]]) -> None:
    data = {"format": TAKING_FORMAT, "taking": [{"user": user, "gpu": gpu} for user, gpu in pending]}
    write_atomically(taking_path(paths), json.dumps(data) + "\n", 0o600, durable=True)


def _note_taking(paths: Paths, ended: list[tuple[str, int]], warn: Report) -> None:
    """Add loans just ended to taking.json (under the loans lock, before the book is written)."""
    pending = read_taking(paths, warn)
    write_taking(paths, pending + [pair for pair in ended if pair not in pending])


# --- the administrator's commands ---------------------------------------------------------


def revoke(paths: Paths, name: str, gpu: int, report: Report, warn: Report) -> int:
    """End name's loan of gpu now, as an expiry would: book first, then the device and its processes."""
    with locked(tick_lock(paths), TICK_WAIT, BUSY):
        reg = registry_store.load_all(paths)
        driver = backend_for(reg)

        def change(book: LoanBook) -> tuple[LoanBook, Loan]:
            loan = next((loan for loan in book.of(name) if loan.gpu == gpu), None)
            if loan is None:
                raise GpushellError(f"GPU {gpu} is not lent to {name}", status=ExitStatus.USAGE)
            _note_taking(paths, [(name, gpu)], warn)
            return LoanBook([item for item in book.loans if item is not loan], book.queue), loan

        loan = loanstore.update(paths, change)
        audit.record(name, "loan-revoked", "ok", f"gpu={gpu} by the administrator")
        report(f"revoked: {name}'s loan of GPU {gpu} (it was to end at {clock(loan.ends)})")
        reports = member_reports(paths, reg, driver, warn)
        return finish_taking(paths, reg, driver, gpudevices.scan(reg.gpu_devices), warn, reports)


def restore(paths: Paths, reg: Registry, report: Report, warn: Report, now: float | None = None) -> int:
    """apply's loans step: drop the loans that ended, put the others' GPUs back into running containers."""
    now = time.time() if now is None else now
    driver = backend_for(reg)
    nodes = gpudevices.scan(reg.gpu_devices)
    with locked(tick_lock(paths), TICK_WAIT, BUSY):

        def change(book: LoanBook) -> tuple[LoanBook, tuple[LoanBook, tuple[Loan, ...]]]:
            kept, ended = lending.expired_on_boot(book, now)
            if ended:
                _note_taking(paths, [(loan.user, loan.gpu) for loan in ended], warn)
            return kept, (kept, ended)

        kept, ended = loanstore.update(paths, change)
        for loan in ended:
            report(f"done: drop {loan.user}'s loan of GPU {loan.gpu}, which ended at {clock(loan.ends)}")
        failures = finish_taking(paths, reg, driver, nodes, warn)
        return failures + _give(paths, reg, driver, nodes, kept.loans, warn)


def expired_text(paths: Paths, now: float | None = None) -> list[str]:
    """apply --dry-run's lines for the loans restore would drop."""
    _, ended = lending.expired_on_boot(loanstore.read(paths), time.time() if now is None else now)
    return [
        f"would drop {loan.user}'s loan of GPU {loan.gpu}, which ended at {clock(loan.ends)}"
        for loan in ended
    ]


def _listed(gpus: Iterable[int]) -> str:
    return ",".join(str(gpu) for gpu in sorted(gpus))


def _why(exc: Exception) -> str:
    """The details, for the administrator (the log message: root reads it)."""
    return exc.log_message if isinstance(exc, GpushellError) else str(exc)
