"""Which container backend the registry asks for."""

from __future__ import annotations

from .backend import ContainerDriver
from .lxc import LxcDriver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry


def backend_for(reg: Registry) -> ContainerDriver:
    """The container backend the registry asks for: LXC under its lxcpath, or an LXD/Incus cluster.

    Everything above the backend gets its driver here.
    """
    if reg.backend == "lxd":
        from .lxd import LxdDriver  # its client imports ssl and http: only where a cluster is used

        return LxdDriver(reg)
    return LxcDriver(reg.lxcpath)


def archived_as(reg: Registry) -> str:
    """What `remove --archive` keeps with this backend, in the admin's words (without making a driver)."""
    if reg.backend == "lxd":
        from .lxd import LxdDriver

        return LxdDriver.ARCHIVED
    return LxcDriver.ARCHIVED
