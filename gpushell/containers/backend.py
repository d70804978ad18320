"""The container backend: the one interface everything above it uses for a container's life.

The helper, the admin and the menu know only `ContainerDriver` and the
states below; factory.backend_for picks the implementation from the
registry (LXC, lxc.py, today).  A second backend (an Incus cluster, say)
is one more class and one branch there.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime
    from typing import Protocol

    from ..core.model import Registry, User
    from ..gpu.gpudevices import Node

    class Closable(Protocol):  # what block_start returns: a socket, for LXC
        def close(self) -> None: ...


RUNNING, STOPPED, MISSING, FROZEN = "RUNNING", "STOPPED", "MISSING", "FROZEN"
UNKNOWN = "UNKNOWN"  # what no one could tell: a config LXC cannot load, a cluster member that did not answer
ROOTFS, CONFIG = "rootfs", "config"  # in a container's directory


class ContainerDriver:
    """A student's container for its whole life, whatever runs it.

    Everything above the backend asks it: where the container's files are
    (its directory, rootfs and config), to make one from the template or
    destroy it, what state it is in, to start, stop or freeze it, and how
    to run a command inside.
    """

    def directory(self, name: str) -> str:
        """The directory holding everything of the container: config, rootfs, snapshots."""
        raise NotImplementedError

    def rootfs(self, name: str) -> str:
        """The container's root filesystem, as root sees it from the host."""
        return os.path.join(self.directory(name), ROOTFS)

    def config_path(self, name: str) -> str:
        return os.path.join(self.directory(name), CONFIG)

    def exists(self, name: str) -> bool:
        return os.path.exists(self.config_path(name))

    def create(self, reg: Registry, user: User, keys: str) -> str:
        """A new, stopped container for user from the registry's template; its directory."""
        raise NotImplementedError

    def destroy(self, reg: Registry, name: str) -> bool:
        """Remove a stopped container with everything in it; False if there was none."""
        raise NotImplementedError

    ARCHIVED = "rootfs"  # what archive keeps, in the admin's words

    def archive(self, name: str, directory: str, user: str, when: datetime.datetime) -> str:
        """Keep the stopped container's files as DIRECTORY/USER-<time>.tar before it is destroyed; its path.

        Raises, leaving no file, when it cannot: the caller then destroys nothing.
        """
        from . import archive

        return archive.archive_rootfs(self.rootfs(name), directory, user, when)

    def names(self) -> list[str]:
        """Every container this backend holds (students', the template, strays), sorted."""
        raise NotImplementedError

    def inspect(self, name: str) -> tuple[str, int | None]:
        """info() for a listing of many containers, off the login path (in-process where it can)."""
        return self.info(name)

    def attach(self, name: str, command: list[str]) -> list[str]:
        """The argv that runs command inside the running container, as its root, environment cleared."""
        raise NotImplementedError

    def state(self, name: str) -> str:
        raise NotImplementedError

    def may_be_running(self, name: str) -> bool:
        """False only when the container is surely not running: a cheap hint, never a state."""
        return True

    def running(self) -> set[str]:
        """The names of every running container of this backend, in one look."""
        raise NotImplementedError

    def start(self, name: str) -> bool:
        """Start it unless it runs already; True when it was started."""
        raise NotImplementedError

    def stop(self, name: str) -> None:
        raise NotImplementedError

    def freeze(self, name: str) -> None:
        """Pause every process of a running container (a consistent point for a snapshot)."""
        raise NotImplementedError

    def unfreeze(self, name: str) -> None:
        raise NotImplementedError

    # For root work on a rootfs (snapshots, restore, rebuild): a state known, not hoped for.

    def info(self, name: str) -> tuple[str, int | None]:
        """Its state and its init's host PID (None when it has none), from one look."""
        return self.state(name), None

    def cgroup_frozen(self, pid: int) -> bool:
        """Whether the kernel's freezer (not the backend's word) holds every task of pid's container."""
        return False

    def block_start(self, name: str) -> Closable:
        """Make every start of the (stopped) container fail until the result is closed.

        Raises GpushellError when it cannot: the container has begun to start.
        """
        raise NotImplementedError

    # Devices of a running container, live (a GPU lent and returned): no restart.

    def add_device(self, name: str, source: str, node: Node) -> None:
        """Make /dev/NODE inside the running container the host's node at source, and allow it.

        Idempotent.  A container that is not running is left alone: its
        config, not this, gives it its devices at its next start.
        """
        raise NotImplementedError

    def remove_device(self, name: str, node: Node) -> None:
        """Deny node to the container and take /dev/NODE out of it; nothing to do when it is stopped.

        Idempotent.  The deny comes first: once it is in place nothing in
        the container can open the node again, wherever container root
        copied it.  Files open already stay open (see end_holders).
        """
        raise NotImplementedError

    def device_holders(self, name: str, node: Node) -> list[int]:
        """Host PIDs of the container's processes that have node open (or mapped), sorted."""
        raise NotImplementedError

    # Lent GPUs where the engine keeps devices in the instance (a cluster): the node calls
    # above are LXC's, whose config the lab writes and whose processes the host sees.

    def lend_gpus(self, user: User, gpus: tuple[int, ...]) -> None:
        """The GPUs (numbered on the user's server) as devices of the container, running or not."""
        raise NotImplementedError

    def end_loans(self, user: User, gpus: tuple[int, ...], restart: bool = True) -> bool:
        """Take the lent GPUs' devices out and (restart) end whatever holds them; whether it restarted."""
        raise NotImplementedError


KILL_WAIT = 10.0  # seconds a SIGKILLed holder may take to let go (a driver call to finish)


def end_holders(
    driver: ContainerDriver, name: str, node: Node, grace: float, kill_wait: float = KILL_WAIT
) -> int:
    """End the container's processes that hold node: SIGTERM, up to grace seconds, then SIGKILL.

    For a GPU taken back: deny it first (remove_device), so nothing opens
    it again, then end what kept it open.  Returns how many processes
    ended.  Every signal goes through a pidfd, so a PID reused meanwhile
    is never signalled: a PID from the scan is opened, then kept only if a
    second scan, after the opening, still finds it holding the node.  The
    SIGKILL round runs with the container frozen, so no holder forks a
    child that inherits the file between the scan and the kill.  Raises
    GpushellError when a holder is still there after all that (a process
    stuck in the driver, say); the caller may stop the container then.
    The caller holds the user's lock: nothing else freezes or thaws the
    container meanwhile.
    """
    import signal

    first = _pidfds(driver.device_holders(name, node))
    if not first:
        return 0
    terms = _confirmed(first, driver.device_holders(name, node))
    try:
        for pidfd in terms.values():
            _signal(pidfd, signal.SIGTERM)
        _wait(list(terms.values()), grace)
        ended = sum(1 for pidfd in terms.values() if _exited(pidfd))
    finally:
        _close(terms)
    if not driver.device_holders(name, node):
        return ended
    kills: dict[int, int] = {}
    try:
        driver.freeze(name)
        kills = _pidfds(driver.device_holders(name, node))  # frozen: these PIDs stay theirs
        for pidfd in kills.values():
            _signal(pidfd, signal.SIGKILL)
    finally:
        driver.unfreeze(name)
    try:
        _wait(list(kills.values()), kill_wait)
        ended += sum(1 for pidfd in kills.values() if _exited(pidfd))
    finally:
        _close(kills)
    left = driver.device_holders(name, node)
    if left:
        from ..core.errors import GpushellError

        raise GpushellError(
            "a program in your container still holds the GPU; restart your container",
            f"container {name}: {len(left)} process(es) still hold /dev/{node.name} after SIGKILL: {left}",
        )
    return ended


def _pidfds(pids: list[int]) -> dict[int, int]:
    """A pidfd for each PID still there."""
    opened = {}
    for pid in pids:
        try:
            opened[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
    return opened


def _confirmed(opened: dict[int, int], still: list[int]) -> dict[int, int]:
    """The pidfds whose PID the second scan found again; the others closed."""
    kept = {pid: pidfd for pid, pidfd in opened.items() if pid in still}
    _close({pid: pidfd for pid, pidfd in opened.items() if pid not in kept})
    return kept


def _signal(pidfd: int, signum: int) -> None:
    import contextlib  # not at the top: backend.py is on the login path
    import signal

    with contextlib.suppress(ProcessLookupError):  # ended already
        signal.pidfd_send_signal(pidfd, signum)


def _exited(pidfd: int) -> bool:
    import select

    return bool(select.select([pidfd], [], [], 0)[0])  # a pidfd reads ready once its process ended


def _wait(pidfds: list[int], seconds: float) -> None:
    """Until every process of pidfds ended, or seconds passed."""
    import select
    import time

    deadline = time.monotonic() + seconds
    waiting = list(pidfds)
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready = select.select(waiting, [], [], left)[0]
        waiting = [pidfd for pidfd in waiting if pidfd not in ready]


def _close(pidfds: dict[int, int]) -> None:
    for pidfd in pidfds.values():
        os.close(pidfd)
