"""The GPU snapshot behind the login banner's GPU lines (helper side, root).

Asking NVML at every login would blow the login's ~50 ms budget (importing
pynvml alone takes ~20 ms, with ctypes; nvmlInit on a real driver more), so
the root helper keeps the last reading in a small file, RUN_DIR/gpus.snapshot,
and a login only reads it.  Its lines (protocol.py's `key=value` form):

    taken=1712345678              when NVML was asked (seconds since the epoch)
    gpu_state=ok                  or no-driver (no NVML, driver or GPU), error (NVML could not count)
    gpu_count=2
    gpu.0=0|37|1024|40960|45|2    index|util %|used MiB|total MiB|temp C|students using it
    gpu.1.error=1|GPU is lost     a GPU that did not answer

Counts only: *who* uses a GPU is for the `gpus` action (another student's
name and memory, never their PIDs); the snapshot, and so the banner, says
how many students have processes on each GPU, and nothing else about them.
The file is root's, 0600 (only the helper reads it), replaced by rename so
a reader never sees half of one.  A login copies its `gpu*` lines into its
answer and adds `gpu_age`; without a snapshot it says `gpu_state=none`.

Who refreshes it: the `gpus` action, as a side effect of asking NVML; and
a login that finds it missing or older than STALE_AFTER seconds: the
helper forks a detached child for it once its answer is written
(`refresh_in_background`), so that no login waits for NVML.  A
non-blocking flock keeps that to one refresh at a time.
"""

from __future__ import annotations

import contextlib
import os
import time

from ..core import protocol
from ..system import files

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..core.gpureport import GpuReport
    from ..core.model import Registry
    from ..core.paths import Paths

    Owners = Callable[[], dict[str, str]]
    Reading = dict[str, object]

OK, NO_DRIVER, ERROR, NONE = "ok", "no-driver", "error", "none"  # NONE: no snapshot yet
STATES = (OK, NO_DRIVER, ERROR)
STALE_AFTER = 30  # seconds; older snapshots are refreshed behind a login
CLOCK_SLACK = 5  # a snapshot this far "in the future" is fine; further, the clock moved: refresh
MAX_BYTES = 16384  # 64 GPUs at ~40 bytes a line, with room to spare
MAX_GPUS = 64
REFRESH_TIMEOUT = 60  # a refresh stuck in NVML longer than this is killed (SIGALRM), freeing the lock
REFRESH_DELAY = 0.2  # seconds a background refresh waits: the login that started it finishes drawing first


# --- pure ---------------------------------------------------------------------------


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def snapshot(table: list[Reading], taken: int) -> dict[str, object]:
    """The snapshot lines for classified readings (gpustatus.classified): counts, no names."""
    from ..core import gputable

    lines: dict[str, object] = {"taken": taken, "gpu_state": OK, "gpu_count": len(table)}
    for row, gpu in enumerate(table):
        index = gputable.field(gpu.get("index"))
        if gpu.get("error") is not None:
            lines[f"gpu.{row}.error"] = f"{index}|{gputable.field(gpu['error'])}"
            continue
        procs: list[tuple[str, object, str, object]] = gpu.get("procs", [])  # type: ignore[assignment]
        # The caller's own processes are "you" (their command name in the name
        # field); another student's carry the student's name; "other" is nobody's.
        students = {name for kind, _pid, name, _memory in procs if kind == "student"}
        users = len(students) + (1 if any(kind == "you" for kind, *_rest in procs) else 0)
        lines[f"gpu.{row}"] = "|".join(
            [
                index,
                gputable.field(gpu.get("util")),
                _mib(gpu.get("mem_used")),
                _mib(gpu.get("mem_total")),
                gputable.field(gpu.get("temp")),
                str(users),
            ]
        )
    return lines


def _mib(value: object) -> str:
    return str(value // (1024 * 1024)) if isinstance(value, int) else ""


def state_snapshot(state: str, taken: int) -> dict[str, object]:
    """A snapshot with no GPU rows: no-driver or error."""
    return {"taken": taken, "gpu_state": state}


def login_keys(lines: dict[str, str] | None, now: float) -> tuple[dict[str, object], bool]:
    """What a login adds to its answer from the snapshot's lines, and whether to refresh it."""
    taken = (lines or {}).get("taken", "")
    state = (lines or {}).get("gpu_state", "")
    if lines is None or not _digits(taken) or state not in STATES:
        return {"gpu_state": NONE}, True
    age = now - int(taken)
    keys: dict[str, object] = {"gpu_state": state, "gpu_age": max(0, int(age))}
    if state == OK:
        count_text = lines.get("gpu_count", "")
        count = min(int(count_text), MAX_GPUS) if _digits(count_text) else 0
        keys["gpu_count"] = count
        for row in range(count):
            for key in (f"gpu.{row}", f"gpu.{row}.error"):
                if key in lines:
                    keys[key] = lines[key]
    return keys, not -CLOCK_SLACK <= age <= STALE_AFTER


# --- the file -----------------------------------------------------------------------


def read(path: str) -> dict[str, str] | None:
    """The snapshot's lines, or None when there is none (or it is a link)."""
    text = files.read_private(path, MAX_BYTES)
    return None if text is None else protocol.decode(text)


def write(path: str, lines: dict[str, object]) -> None:
    """Replace the snapshot at once (rename): root's, 0600."""
    files.write_private(path, protocol.encode(lines))


def write_members(paths: Paths, reg: Registry, reports: dict[str, GpuReport | None]) -> None:
    """Each cluster member's banner snapshot from its report (the tick's step); none without a report."""
    from ..core.gpureport import banner_table

    assert reg.cluster is not None
    for member in reg.cluster.members:
        path, report = paths.member_gpu_snapshot(member), reports.get(member)
        if report is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        elif report.state != OK:
            write(path, state_snapshot(report.state, report.taken))
        else:
            students = {user.container: user.name for user in reg.users.values() if user.member == member}
            write(path, snapshot(banner_table(report, students), report.taken))


def for_member_login(paths: Paths, member: str) -> dict[str, object]:
    """A cluster login's GPU keys, from its member's snapshot: the tick keeps it, the login only reads."""
    keys, _stale = login_keys(read(paths.member_gpu_snapshot(member)), time.time())
    return {**keys, "gpu_member": member}


# --- asking NVML (never on a login's own time) --------------------------------------


def take(
    load: Callable[[], Any | None], caller: str, owners: Owners
) -> tuple[list[Reading] | None, dict[str, object]]:
    """Ask NVML once: the table classified for caller (None without a driver) and its snapshot.

    NVML failing to count its GPUs raises GpushellError, as `gpus` always did.
    """
    from . import gpustatus

    taken = int(time.time())
    nvml = load()
    if nvml is None:
        return None, state_snapshot(NO_DRIVER, taken)
    table = gpustatus.classified(nvml, caller, owners)
    return table, snapshot(table, taken)


def _load_nvml() -> Any | None:
    from . import gpustatus

    return gpustatus.load_nvml()


def gpus_answer(
    paths: Paths, caller: str, owners: Owners, load: Callable[[], Any | None] = _load_nvml
) -> dict[str, object]:
    """The helper's answer to `gpus`; the snapshot is rewritten from the same reading."""
    from ..core import gputable
    from ..core.errors import GpushellError

    try:
        table, lines = take(load, caller, owners)
    except GpushellError:
        _write_quietly(paths, state_snapshot(ERROR, int(time.time())))
        raise
    _write_quietly(paths, lines)
    return {"state": gputable.NO_DRIVER} if table is None else gputable.encode(table)


def _write_quietly(paths: Paths, lines: dict[str, object]) -> None:
    """The snapshot is a cache: failing to write it never fails the action it rides on."""
    try:
        write(paths.gpu_snapshot, lines)
    except OSError as exc:
        from ..system import audit

        audit.record("root", "gpu-snapshot", "failed", str(exc), warning=True)


def refresh(paths: Paths, owners: Owners, load: Callable[[], Any | None] = _load_nvml) -> bool:
    """Rewrite the snapshot from NVML unless another refresh holds the lock; True when written."""
    import fcntl

    from ..core.errors import GpushellError

    try:
        fd = os.open(paths.gpu_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # one refresh at a time; that one will write
        try:
            _table, lines = take(load, "", owners)
        except GpushellError:
            lines = state_snapshot(ERROR, int(time.time()))
        write(paths.gpu_snapshot, lines)
        return True
    finally:
        os.close(fd)


# --- in the background ------------------------------------------------------------


def for_login(paths: Paths) -> tuple[dict[str, object], bool]:
    """The login answer's GPU keys, and whether the snapshot is missing or stale
    (the helper then calls refresh_in_background once its answer is written)."""
    return login_keys(read(paths.gpu_snapshot), time.time())


def refresh_in_background(paths: Paths, owners: Owners, load: Callable[[], Any | None] = _load_nvml) -> None:
    """Refresh the snapshot in a detached child; return at once.

    run_detached flushes the helper's answer out first, so the child never holds it back.
    """
    run_detached(lambda: _background_refresh(paths, owners, load))


def _background_refresh(paths: Paths, owners: Owners, load: Callable[[], Any | None]) -> None:
    from ..system import audit

    # The shell still has the banner to draw and sshd to relay it: on a small
    # or busy host, NVML's import and set-up would compete with them for the CPU.
    time.sleep(REFRESH_DELAY)
    audit.open_log(f"{paths.syslog_ident}-helper")
    try:
        refresh(paths, owners, load)
    except Exception as exc:  # nobody to tell but the log
        audit.record("root", "gpu-refresh", "failed", f"{type(exc).__name__}: {exc}", warning=True)


def run_detached(work: Callable[[], object]) -> None:
    """Run work in a child that holds none of this process's files; return at once.

    The login shell reads the helper's stdout and stderr to EOF and then
    waits for sudo, which waits for the helper (spawn.run): so the child
    must keep neither pipe open, nor be what sudo waits for.  It gets
    /dev/null for 0-2, no other descriptor (not the user's lock, nor the
    syslog socket), a session of its own (no terminal, so no hang-up from
    it), the job-control signals ignored, a watchdog alarm, and a lower
    priority than the login it rides on.  One fork, not the daemon's
    double fork: the helper exits right after, so init reaps the child,
    and it never opens a terminal it could acquire.
    """
    import signal
    import syslog

    from ..system.loginproc import flush_streams

    flush_streams()  # the answer goes out before anything else happens
    if os.fork():
        return
    try:
        os.setsid()
        syslog.closelog()  # before its descriptor goes: libc must not write to a reused number
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir("/")
        for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(REFRESH_TIMEOUT)
        os.nice(10)  # the login that forked it is still being drawn: let it have the CPU first
        work()
    finally:
        os._exit(0)
