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
    from typing import Protocol

    from ..core.model import Registry, User

    class Closable(Protocol):  # what block_start returns: a socket, for LXC
        def close(self) -> None: ...


RUNNING, STOPPED, MISSING, FROZEN = "RUNNING", "STOPPED", "MISSING", "FROZEN"
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
