"""What the registry says, as plain frozen data (no parsing here).

Kept apart from the YAML parser so that code on the login path (the root
helper reading its cached copy) never imports PyYAML.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from .errors import ExitStatus, GpushellError

GpuSpec = str | tuple[int, ...]  # "all", "none" or GPU indices


@dataclasses.dataclass(frozen=True)
class Mount:
    source: str
    target: str
    readonly: bool = True


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    port: int
    ip: ipaddress.IPv4Address
    idmap: int
    container: str
    gpus: GpuSpec
    mounts: tuple[Mount, ...]
    autostart: bool = False


@dataclasses.dataclass(frozen=True)
class Registry:
    path: str
    hostname: str
    bridge: str
    subnet: ipaddress.IPv4Network
    ports: tuple[int, int]
    template: str
    lxcpath: str
    chain: str
    idmap_start: int
    idmap_size: int
    gpus: GpuSpec
    mounts: tuple[Mount, ...]
    start_timeout: float
    idle_timeout: int
    masquerade: bool
    users: dict[str, User]

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The bridge's own address: the first host of the subnet."""
        return next(self.subnet.hosts())

    def user(self, name: str) -> User:
        try:
            return self.users[name]
        except KeyError:
            raise GpushellError(
                f"{name} is not registered in {self.path}",
                f"user {name!r} has no entry in {self.path}",
                ExitStatus.NOT_REGISTERED,
            ) from None
