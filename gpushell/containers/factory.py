"""Which container backend the registry asks for."""

from __future__ import annotations

from .backend import ContainerDriver
from .lxc import LxcDriver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry
    from .storage import DirStorage


def backend_for(reg: Registry) -> ContainerDriver:
    """The container backend the registry asks for: LXC under its lxcpath, the only one yet.

    Everything above the backend gets its driver here, so a second backend
    is one class and one branch.
    """
    return LxcDriver(reg.lxcpath)


def storage_for(reg: Registry) -> DirStorage:
    """How the registry's containers are stored and copied: directory copies, the only kind yet."""
    from .storage import DirStorage  # off the login path: the copies' modules

    return DirStorage()
