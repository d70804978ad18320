"""On a cluster: lent GPUs taken back without a restart, watched until a member's report clears them.

The front door sees no process on a member, and a process that opened a
GPU keeps it after the engine takes the device out.  So the end of a loan
restarts the container, unless the member's fresh report showed none of
the container's processes on that GPU (an idle loan's always does: that
is what idle means).  Then the device goes without a restart and the GPU
is watched here (watching.json in the state directory): a process may
have opened it between the report and the take.  Each tick reads the
first report taken after the device went (gpureport.outlived): it shows
the container on the GPU, and the container restarts; it shows none, and
the watch ends; no report can tell within gpureport.STALE_AFTER seconds
(the member's timer stopped), and the container restarts.

The tick's ends and `loans revoke` add watches, and so does a student's
own `return`; only the tick checks them.  Each change of the file is made
under its own lock (watching.lock), never while a container restarts.
"""

from __future__ import annotations

import json
import time

from ..core import gpureport, lending
from ..core.errors import GpushellError
from ..core.value import Value
from ..system import audit, loanstore
from ..system.files import read_format, write_atomically
from ..system.lock import locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..core.gpureport import GpuReport
    from ..core.model import Registry, User
    from ..core.paths import Paths

    Report = Callable[[str], None]
    Reports = Mapping[str, GpuReport | None]

FORMAT = 1
MAX_FILE = 1024 * 1024
LOCK_WAIT = 30.0  # seconds: each holder reads, changes and writes a small file
BUSY = "the watch of GPUs taken back is busy; try again in a moment"


class Watch(Value):
    """A GPU taken from the student's running container at `since` (epoch seconds), no restart."""

    __slots__ = ("gpu", "since", "user")

    def __init__(self, user: str, gpu: int, since: float) -> None:
        self.user, self.gpu, self.since = user, gpu, since


def path(paths: Paths) -> str:
    return f"{paths.state_dir}/watching.json"


def lock_path(paths: Paths) -> str:
    return f"{paths.run_dir}/watching.lock"


def quiet(reg: Registry, reports: Reports, now: float, user: User, gpus: tuple[int, ...]) -> bool:
    """Whether the GPUs may leave the student's container without a restart: on a cluster, where
    the member's fresh report shows none of the container's processes on any of them."""
    if reg.cluster is None:
        return False
    return gpureport.shows(reports.get(user.member), now, user.container, gpus) is False


def add(paths: Paths, watches: list[Watch], warn: Report) -> None:
    if watches:
        _update(paths, lambda found: found + watches, warn)


def _update(paths: Paths, change: Callable[[list[Watch]], list[Watch]], warn: Report) -> None:
    with locked(lock_path(paths), LOCK_WAIT, BUSY):
        found = read(paths, warn)
        changed = change(found)
        if changed != found:
            write(paths, changed)


def check(
    paths: Paths,
    reg: Registry,
    reports: Reports,
    now: float,
    restart: Callable[[User], bool],
    report: Report,
    warn: Report,
) -> None:
    """Each watched GPU against its member's report: restart (restart: under the student's lock,
    whether it ran), let go, or wait; a restart that fails is tried at the next tick."""
    book, done = loanstore.read(paths), list[Watch]()
    for watch in read(paths, warn):  # outside the lock: a restart takes seconds
        user = reg.users.get(watch.user)
        if user is None or lending.holds(user, book, watch.gpu):
            done.append(watch)  # no longer registered, or the GPU is theirs again
            continue
        verdict = gpureport.outlived(reports.get(user.member), now, user.container, watch.gpu, watch.since)
        if verdict is None:
            continue  # the next report decides
        if verdict:
            try:
                restarted = restart(user)
            except GpushellError as exc:
                warn(f"{user.name}'s container not restarted yet (GPU {watch.gpu}): {exc.log_message}")
                continue
            if restarted:
                audit.record(user.name, "loans", "ok", f"GPU {watch.gpu} taken back: container restarted")
                report(f"restarted: {user.name}'s container, whose processes may still hold GPU {watch.gpu}")
        done.append(watch)
    if done:
        _update(paths, lambda found: [watch for watch in found if watch not in done], warn)


def read(paths: Paths, warn: Report) -> list[Watch]:
    """The watched GPUs; a damaged file is warned about and empty."""
    try:
        data = read_format(path(paths), MAX_FILE, FORMAT)
        if data is None:
            return []
        watches = [Watch(item["user"], item["gpu"], item["since"]) for item in data["watching"]]
        if not all(
            isinstance(watch.user, str) and type(watch.gpu) is int and type(watch.since) in (int, float)
            for watch in watches
        ):
            raise ValueError("a user, GPU or time of the wrong kind")
    except (ValueError, TypeError, KeyError) as exc:
        warn(f"{path(paths)} is damaged ({exc}); ignored: restart the containers of loans just ended")
        return []
    return watches


def write(paths: Paths, watches: list[Watch]) -> None:
    items = [{"user": watch.user, "gpu": watch.gpu, "since": watch.since} for watch in watches]
    write_atomically(path(paths), json.dumps({"format": FORMAT, "watching": items}) + "\n", 0o600)


def taken(user: User, gpu: int) -> Watch:
    """The watch of a GPU just taken from the student's container."""
    return Watch(user.name, gpu, time.time())
