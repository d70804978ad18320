"""What the registry says, as plain frozen data (no parsing here).

Kept apart from the YAML parser so that code on the login path (the root
helper reading its cached copy) never imports PyYAML.
"""

from __future__ import annotations

from .errors import ExitStatus, GpushellError
from .value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    # Only for annotations: a login needs only the dotted text
    # (test_login_imports.py); the typed values are built when asked for.
    import ipaddress

GpuSpec = str | tuple[int, ...]  # "all", "none" or GPU indices


class Mount(Value):
    __slots__ = ("readonly", "source", "target")

    def __init__(self, source: str, target: str, readonly: bool = True) -> None:
        self.source, self.target, self.readonly = source, target, readonly


class Limits(Value):
    """What one container may use: memory (bytes, and as much swap), CPUs, processes, disk (bytes).

    The kernel holds the first three (cgroups); disk is held by the storage
    (a btrfs quota group) and only counted on plain directories.
    """

    __slots__ = ("cpus", "disk", "memory", "pids")

    def __init__(self, memory: int, cpus: float, pids: int, disk: int = 50 * 2**30) -> None:
        self.memory, self.cpus, self.pids, self.disk = memory, cpus, pids, disk


# Used where a registry says nothing: finite, never unlimited.  `init`
# writes values sized from the host into a new registry instead.
DEFAULT_LIMITS = Limits(memory=8 * 2**30, cpus=4.0, pids=4096, disk=50 * 2**30)


class LoanLimits(Value):
    """What one student may borrow: how many GPUs at a time (0: none), each for how long (seconds)."""

    __slots__ = ("max_duration", "max_per_student")

    def __init__(self, max_per_student: int, max_duration: int) -> None:
        self.max_per_student, self.max_duration = max_per_student, max_duration


class Lending(Value):
    """The lab's GPU lending (the registry's `lending:`); a registry without one lends nothing.

    gpus: "all" or the GPU numbers that may be lent (less, always, any GPU
    fixed to a student); max_per_student and max_duration (seconds): each
    student's allowance unless their entry has its own; idle_return: seconds
    a lent GPU may sit without a process before it goes back (0: never);
    notify_command: an argv run at warning time with the student's name,
    the GPU and the loan's end (epoch seconds) appended; () when none.
    """

    __slots__ = ("gpus", "idle_return", "max_duration", "max_per_student", "notify_command")

    def __init__(
        self,
        gpus: GpuSpec = "all",
        max_per_student: int = 1,
        max_duration: int = 86400,
        idle_return: int = 7200,
        notify_command: tuple[str, ...] = (),
    ) -> None:
        self.gpus, self.max_per_student, self.max_duration = gpus, max_per_student, max_duration
        self.idle_return, self.notify_command = idle_return, notify_command

    def limits_for(self, user: User) -> LoanLimits:
        """The student's own allowance where their entry has one, else the lab's."""
        return user.lending or LoanLimits(self.max_per_student, self.max_duration)


class StatusPage(Value):
    """The registry's `status_page:`: whether the tick writes the page, and whether it names students.

    Written unless turned off; without `names: true` the page says how many
    students hold a GPU, not who: anyone who can reach the page reads it.
    """

    __slots__ = ("enabled", "names")

    def __init__(self, enabled: bool = True, names: bool = False) -> None:
        self.enabled, self.names = enabled, names


DEFAULT_STATUS_PAGE = StatusPage()


class Member(Value):
    """One server of an LXD/Incus cluster: its name in the cluster, its address, what placement counts.

    gpus: the GPU numbers it has (as in its /dev/nvidiaN); memory: bytes
    students' limits may add up to there.  `add` places a student where
    most GPUs are free, then most memory (placement.py).
    """

    __slots__ = ("address", "gpus", "memory", "name")

    def __init__(self, name: str, address: str, gpus: tuple[int, ...], memory: int) -> None:
        self.name, self.address, self.gpus, self.memory = name, address, gpus, memory


class Cluster(Value):
    """The registry's `lxd:`: the engine's project gpushell works in, its API port, the members, and more.

    Only with `backend: lxd`; the front door reaches a member's API at
    address:port, and a student's forward at address:student port.
    """

    __slots__ = ("credentials", "members", "pool", "port", "project")

    def __init__(
        self,
        members: dict[str, Member],
        project: str = "gpushell",
        port: int = 8443,
        credentials: str = "/etc/gpushell/lxd",
        pool: str = "default",
    ) -> None:
        self.members, self.project, self.port = members, project, port
        # The directory with gpushell's client certificate and key and the cluster's certificate (lxdapi.py).
        self.credentials = credentials
        self.pool = pool  # the storage pool students' root disks are on

    def __hash__(self) -> int:
        return hash((self.project, self.port, tuple(self.members)))

    def member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise GpushellError(f"{name} is not a member in the registry's lxd.members") from None


class User(Value):
    __slots__ = (
        "address", "autostart", "container", "expires", "gpus", "idmap", "lending", "limits", "member",
        "mounts", "name", "port", "snapshot_limit",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        port: int,
        ip: ipaddress.IPv4Address | str,
        idmap: int,
        container: str,
        gpus: GpuSpec,
        mounts: tuple[Mount, ...],
        autostart: bool = False,
        snapshot_limit: int = 3,
        limits: Limits = DEFAULT_LIMITS,
        lending: LoanLimits | None = None,
        expires: tuple[int, int, int] | None = None,
        member: str = "",
    ) -> None:
        self.name, self.port, self.idmap = name, port, idmap
        self.member = member  # the cluster member holding the container (backend lxd); "" on one host
        # The day the account expires, (year, month, day), from 00:00 local time; None: never (expiry.py).
        self.expires = expires
        self.limits = limits
        self.lending = lending  # the student's own borrowing allowance; None: the lab's
        self.address = str(ip)  # the container's IPv4 address as dotted text
        self.container, self.gpus, self.mounts, self.autostart = container, gpus, mounts, autostart
        self.snapshot_limit = snapshot_limit  # how many snapshots the student may keep; 0: none

    @property
    def ip(self) -> ipaddress.IPv4Address:
        import ipaddress

        return ipaddress.IPv4Address(self.address)


_SUBNETS: dict[str, ipaddress.IPv4Network] = {}


class Registry(Value):
    __slots__ = (
        "allow_container_traffic",
        "backend",
        "bridge",
        "chain",
        "cluster",
        "contact",
        "disabled_actions",
        "driver",
        "driver_installer",
        "driver_root",
        "egress_deny",
        "expire_grace",
        "gpu_devices",
        "gpus",
        "hostname",
        "idle_timeout",
        "idmap_size",
        "idmap_start",
        "lending",
        "limits",
        "lxcpath",
        "masquerade",
        "mounts",
        "network",
        "path",
        "pool_file",
        "ports",
        "snapshot_limit",
        "start_timeout",
        "status_page",
        "storage",
        "template",
        "users",
    )  # fmt: skip

    def __init__(
        self,
        path: str,
        hostname: str,
        bridge: str,
        subnet: ipaddress.IPv4Network | str,
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
        limits: Limits = DEFAULT_LIMITS,
        allow_container_traffic: bool = False,
        egress_deny: tuple[str, ...] = (),
        storage: str = "dir",
        pool_file: str = "",
        lending: Lending | None = None,
        expire_grace: int = 30 * 86400,
        contact: str = "your administrator",
        status_page: StatusPage = DEFAULT_STATUS_PAGE,
        backend: str = "lxc",
        cluster: Cluster | None = None,
    ) -> None:
        self.path, self.hostname, self.bridge = path, hostname, bridge
        self.network = str(subnet)  # the bridge's subnet as text, `10.0.3.0/24`
        self.ports, self.template, self.lxcpath, self.chain = ports, template, lxcpath, chain
        self.idmap_start, self.idmap_size, self.gpus, self.mounts = idmap_start, idmap_size, gpus, mounts
        self.start_timeout, self.idle_timeout, self.masquerade = start_timeout, idle_timeout, masquerade
        self.users, self.gpu_devices = users, gpu_devices
        # driver: `host` (its files bind-mounted) or `container` (the template's, checked by doctor)
        self.driver, self.driver_root = driver, driver_root
        self.driver_installer = driver_installer  # NVIDIA's .run for `driver sync`; "" when unset
        self.snapshot_limit = snapshot_limit  # the default for users without their own
        self.disabled_actions = disabled_actions  # menu words the admin turned off for this lab
        self.limits = limits  # the default for users without their own
        # Whether containers may open connections to each other (off: only through the forwards).
        self.allow_container_traffic = allow_container_traffic
        self.egress_deny = egress_deny  # CIDRs no container may reach (a NAS server, a management LAN)
        # How containers' trees are kept: `dir` (plain copies) or `btrfs` (subvolumes, snapshots, quotas).
        self.storage = storage
        self.pool_file = pool_file  # a file holding the btrfs filesystem mounted at lxcpath; "" when none
        self.lending = lending  # GPU lending; None: this lab lends no GPUs
        # Seconds after an account's expiry day begins before `gpushell-admin expire` removes it.
        self.expire_grace = expire_grace
        self.contact = contact  # whom an expired student is told to ask (one printable line)
        self.status_page = status_page  # the status page the tick writes (statusmodel.py)
        # What runs the containers: `lxc` on this host, or `lxd`, an LXD/Incus cluster (cluster: its members).
        self.backend, self.cluster = backend, cluster

    def __hash__(self) -> int:
        return hash((self.path, self.hostname))  # users is a dict

    def with_users(self, users: dict[str, User]) -> Registry:
        values = {name: getattr(self, name) for name in self.__slots__ if name != "network"}
        return Registry(**{**values, "subnet": self.network, "users": users})

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        subnet = _SUBNETS.get(self.network)
        if subnet is None:  # parsed once per process: validation asks for it once per user
            import ipaddress

            subnet = _SUBNETS[self.network] = ipaddress.IPv4Network(self.network)
        return subnet

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
