"""What the registry says, as plain frozen data (no parsing here).

Kept apart from the YAML parser so that code on the login path (the root
helper reading its cached copy) never imports PyYAML.
"""

from __future__ import annotations

import ipaddress

from .errors import ExitStatus, GpushellError

GpuSpec = str | tuple[int, ...]  # "all", "none" or GPU indices


class _Value:
    """Equality, hash, repr and replace() from __slots__.

    Hand-written rather than dataclasses: the root helper builds these on
    every login, and importing `dataclasses` (with `inspect`) cost ~6 ms.
    Treat instances as immutable.
    """

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined, unused-ignore]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Mount(_Value):
    __slots__ = ("readonly", "source", "target")

    def __init__(self, source: str, target: str, readonly: bool = True) -> None:
        self.source, self.target, self.readonly = source, target, readonly


class User(_Value):
    __slots__ = ("autostart", "container", "gpus", "idmap", "ip", "mounts", "name", "port", "snapshot_limit")

    def __init__(
        self,
        name: str,
        port: int,
        ip: ipaddress.IPv4Address,
        idmap: int,
        container: str,
        gpus: GpuSpec,
        mounts: tuple[Mount, ...],
        autostart: bool = False,
        snapshot_limit: int = 3,
    ) -> None:
        self.name, self.port, self.ip, self.idmap = name, port, ip, idmap
        self.container, self.gpus, self.mounts, self.autostart = container, gpus, mounts, autostart
        self.snapshot_limit = snapshot_limit  # how many snapshots the student may keep; 0: none


class Registry(_Value):
    __slots__ = (
        "bridge", "chain", "disabled_actions", "driver", "driver_installer", "driver_root", "gpu_devices",
        "gpus", "hostname", "idle_timeout", "idmap_size", "idmap_start", "lxcpath", "masquerade", "mounts",
        "path", "ports", "snapshot_limit", "start_timeout", "subnet", "template", "users",
    )  # fmt: skip

    def __init__(
        self,
        path: str,
        hostname: str,
        bridge: str,
        subnet: ipaddress.IPv4Network,
        ports: tuple[int, int],
        template: str,
        lxcpath: str,
        chain: str,
        idmap_start: int,
        idmap_size: int,
        gpus: GpuSpec,
        mounts: tuple[Mount, ...],
        start_timeout: float,
        idle_timeout: int,
        masquerade: bool,
        users: dict[str, User],
        gpu_devices: str = "/dev",
        driver: str = "host",
        driver_root: str = "/",
        driver_installer: str = "",
        snapshot_limit: int = 3,
        disabled_actions: tuple[str, ...] = (),
    ) -> None:
        self.path, self.hostname, self.bridge, self.subnet = path, hostname, bridge, subnet
        self.ports, self.template, self.lxcpath, self.chain = ports, template, lxcpath, chain
        self.idmap_start, self.idmap_size, self.gpus, self.mounts = idmap_start, idmap_size, gpus, mounts
        self.start_timeout, self.idle_timeout, self.masquerade = start_timeout, idle_timeout, masquerade
        self.users, self.gpu_devices = users, gpu_devices
        # driver: `host` (its files bind-mounted) or `container` (the template's, checked by doctor)
        self.driver, self.driver_root = driver, driver_root
        self.driver_installer = driver_installer  # NVIDIA's .run for `driver sync`; "" when unset
        self.snapshot_limit = snapshot_limit  # the default for users without their own
        self.disabled_actions = disabled_actions  # menu words the admin turned off for this lab

    def __hash__(self) -> int:
        return hash((self.path, self.hostname))  # users is a dict

    def with_users(self, users: dict[str, User]) -> Registry:
        values = {name: getattr(self, name) for name in self.__slots__}
        return Registry(**{**values, "users": users})

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
