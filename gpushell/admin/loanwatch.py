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

Only the tick, revoke and apply write the file (under the tick lock).
"""

from __future__ import annotations

import json
import time

from ..core import gpureport, lending
from ..core.errors import GpushellError
from ..core.value import Value
from ..system import audit, loanstore
from ..system.files import read_format, write_atomically

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


class Watch(Value):
    """A GPU taken from the student's running container at `since` (epoch seconds), no restart."""

    __slots__ = ("gpu", "since", "user")

    def __init__(self, user: str, gpu: int, since: float) -> None:
        self.user, self.gpu, self.since = user, gpu, since


def path(paths: Paths) -> str:
    return f"{paths.state_dir}/watching.json"


def quiet(reg: Registry, reports: Reports, now: float, user: User, gpu: int) -> bool:
    """Whether the GPU may leave the student's container without a restart: on a cluster, where
    the member's fresh report shows none of the container's processes on it."""
    if reg.cluster is None:
        return False
    return gpureport.shows(reports.get(user.member), now, user.container, (gpu,)) is False


def add(paths: Paths, watches: list[Watch], warn: Report) -> None:
    if watches:
        write(paths, read(paths, warn) + watches)


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
    watches = read(paths, warn)
    if not watches:
        return
    book, left = loanstore.read(paths), list[Watch]()
    for watch in watches:
        user = reg.users.get(watch.user)
        if user is None or lending.holds(user, book, watch.gpu):
            continue  # no longer registered, or the GPU is theirs again
        verdict = gpureport.outlived(reports.get(user.member), now, user.container, watch.gpu, watch.since)
        if verdict is None:
            left.append(watch)
            continue
        if not verdict:
            continue
        try:
            restarted = restart(user)
        except GpushellError as exc:
            left.append(watch)
            warn(f"{user.name}'s container not restarted yet (GPU {watch.gpu}): {exc.log_message}")
            continue
        if restarted:
            text = f"restarted: {user.name}'s container, whose processes may still hold GPU {watch.gpu}"
            audit.record(user.name, "loans", "ok", f"GPU {watch.gpu} taken back: container restarted")
            report(text)
    if left != watches:
        write(paths, left)


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
