"""Where a helper or admin action happens: install paths, the registry, the container backend."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..containers.backend import ContainerDriver
    from ..core.model import Registry
    from ..core.paths import Paths


class Context:
    """Where an action happens: install paths, the registry, the container backend."""

    __slots__ = ("driver", "paths", "registry")

    def __init__(self, paths: Paths, registry: Registry, driver: ContainerDriver) -> None:
        self.paths, self.registry, self.driver = paths, registry, driver
