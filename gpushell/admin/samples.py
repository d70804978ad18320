"""The tick's usage samples: who holds which GPU, and their container's cgroup figures, once a minute.

`gather` makes one Sample per student holding a GPU: a loan (whether or
not their container runs) or GPUs of their own (while it runs).  Students
holding none get no line, so the files grow with GPU use, not with the
lab: a busy 64-GPU host writes about 64 lines (~110 bytes each) a minute,
some 300 MB a month.  The container's figures come from its cgroup files
(cgroups.read_usage), read directly: no process per student.

The files: `STATE_DIR/samples/YYYY-MM.jsonl` (the month in UTC), one
JSON line per sample (usagereport.sample_line), root's and private (0600
in 0700).  A month's file can be archived or deleted once reported on.
"""

from __future__ import annotations

import os
import stat
import time

from ..containers import cgroups
from ..containers.backend import RUNNING
from ..core.errors import ExitStatus, GpushellError
from ..core.usagereport import Sample, parse_line, sample_line
from ..system.ownership import check_owned_by_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ..containers.backend import ContainerDriver
    from ..core.lending import LoanBook
    from ..core.model import Registry
    from ..core.paths import Paths
    from ..gpu.gpuuse import GpuUse

SUFFIX = ".jsonl"
USAGE_KEYS = ("cpu_ns", "memory_bytes")


def directory(paths: Paths) -> str:
    return f"{paths.state_dir}/samples"


def month_of(when: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(when))


# --- who holds what ------------------------------------------------------------------


def gather(
    reg: Registry,
    book: LoanBook,
    driver: ContainerDriver,
    use: GpuUse | None,
    host_gpus: Iterable[int],
    now: float,
) -> list[Sample]:
    """A sample for each student holding a GPU now, by name."""
    host = frozenset(host_gpus)
    lent: dict[str, list[tuple[int, int]]] = {}
    for loan in book.loans:
        lent.setdefault(loan.user, []).append((loan.gpu, int(loan.started)))
    found = []
    for name in sorted(set(lent) | {user.name for user in reg.users.values() if user.gpus != "none"}):
        user = reg.users.get(name)
        figures: dict[str, int] = {}
        own: frozenset[int] = frozenset()
        if user is not None:
            pid = _running_pid(driver, user.container)
            if pid is not None:
                figures = cgroups.read_usage(pid, USAGE_KEYS)
                own = host if user.gpus == "all" else host & frozenset(user.gpus)
        loans = tuple(sorted(lent.get(name, ())))
        gpus = tuple(sorted(own | {gpu for gpu, _ in loans}))
        if not gpus:
            continue
        busy = None if use is None else tuple(gpu for gpu in gpus if gpu in use.by_user.get(name, ()))
        found.append(Sample(now, name, gpus, loans, busy, figures.get("cpu_ns"), figures.get("memory_bytes")))
    return found


def _running_pid(driver: ContainerDriver, container: str) -> int | None:
    """The container's init PID while it runs; a stopped one costs a refused connect, not a process."""
    if not driver.may_be_running(container):
        return None
    state, pid = driver.inspect(container)
    return pid if state == RUNNING else None


# --- the files -----------------------------------------------------------------------


def append(paths: Paths, samples: list[Sample]) -> None:
    """Add the samples to their month's file, in one write."""
    if not samples:
        return
    folder = _ensure_directory(paths)
    path = f"{folder}/{month_of(samples[0].time)}{SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
            raise _unsafe(path, "is not a private file of root's (0600)")
        view = memoryview("".join(map(sample_line, samples)).encode())
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read(paths: Paths, since: float | None, until: float | None) -> tuple[list[Sample], int]:
    """The samples of the months that overlap [since, until), and how many lines were not samples."""
    folder = directory(paths)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return [], 0
    check_owned_by_root(folder)
    first = None if since is None else month_of(since - 86400)  # a day's margin either side
    last = None if until is None else month_of(until + 86400)
    found: list[Sample] = []
    bad = 0
    for name in names:
        month = name.removesuffix(SUFFIX)
        if not name.endswith(SUFFIX) or (first and month < first) or (last and month > last):
            continue
        for text in _lines(f"{folder}/{name}"):
            sample = parse_line(text)
            if sample is None:
                bad += 1
            else:
                found.append(sample)
    return found, bad


def _lines(path: str) -> Iterator[str]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, encoding="utf-8", errors="replace") as stream:
        yield from stream


def _ensure_directory(paths: Paths) -> str:
    """STATE_DIR/samples, made root's and 0700 (the state directory too) when missing."""
    folder = directory(paths)
    for path in (paths.state_dir, folder):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(path, 0o700)
    check_owned_by_root(folder)
    if os.lstat(folder).st_mode & 0o077:
        raise _unsafe(folder, "is open to others (mode must be 0700)")
    return folder


def _unsafe(path: str, why: str) -> GpushellError:
    return GpushellError(f"{path} is unsafe: {why}", f"refusing {path}: {why}", ExitStatus.CONFIG)
