"""Which container backend the registry asks for."""

from __future__ import annotations

from .backend import ContainerDriver
from .lxc import LxcDriver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry


def backend_for(reg: Registry) -> ContainerDriver:
    """The container backend the registry asks for: LXC under its lxcpath, the only one yet.

    Everything above the backend gets its driver here, so a second backend
    is one class and one branch.
    """
    return LxcDriver(reg.lxcpath)
