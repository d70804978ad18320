"""The LXD/Incus backend: students' containers on the members of a cluster, driven by its REST API.

gpushell does not manage the cluster: the engine places nothing by itself
(each create names its member, placement.py chose it), replicates its
database, moves stopped instances and holds the limits.  This module turns
ContainerDriver's calls into API requests (lxdapi.py) and the engine's
answers into the backend's states.  A container has no directory on the
front door: its files are reached through the engine's file API only.
"""

from __future__ import annotations

import contextlib

from ..core.errors import ExitStatus, GpushellError
from ..core.placement import gpu_numbers
from . import lxdapi, lxdinstance
from .backend import FROZEN, MISSING, RUNNING, STOPPED, UNKNOWN, ContainerDriver
from .lxcconfig import STUDENT_ID, hosts_file  # the student's uid and /etc/hosts, as on one host

TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime
    from typing import Any

    from ..core.gpureport import GpuReport
    from ..core.model import Registry, User
    from ..gpu.gpudevices import Node
    from .backend import Closable

# "Error": what a listing says of an instance whose member did not answer it (no config, no devices).
STATES = {"Running": RUNNING, "Stopped": STOPPED, "Frozen": FROZEN, "Error": UNKNOWN}
STATE_WAIT = 120.0  # seconds a start, stop or freeze may take the engine
MOVE_WAIT = 3600.0  # seconds a copy of a whole disk (to another member, another pool) may take
COMMAND_NOT_FOUND = "Command not found"  # LXD's and Incus's failure of an exec whose command exits 127


class MemberDown(GpushellError):
    """The member holding a container does not answer: one line for the student, the rest for the log."""

    def __init__(self, member: str, detail: str) -> None:
        super().__init__(
            f"the server holding your container ({member}) is not answering; "
            "your files are safe there; try again later or tell your administrator",
            f"member {member}: {detail}",
            ExitStatus.ERROR,
        )
        self.member = member


class LxdDriver(ContainerDriver):
    ARCHIVED = "container"  # the engine's backup: config, devices and root disk

    def __init__(self, reg: Registry) -> None:
        assert reg.cluster is not None
        self.reg, self.cluster = reg, reg.cluster
        self.member_of = {user.container: user.member for user in reg.users.values()}
        self._clients: dict[str, lxdapi.Client] = {}

    def client(self, name: str | None = None) -> lxdapi.Client:
        """A client for requests about container name: its own member's API alone.

        Any member would forward the request, but only to the container's
        member: asking that one directly makes a member that is down a
        refused or timed-out connect (seconds), not a forwarded wait.
        Without a name (listings, the cluster's members): the first member
        that answers.
        """
        members = self.cluster.members
        own = members.get(self.member_of.get(name or "", ""))
        return self._cached(
            [own.address] if own is not None else [member.address for member in members.values()]
        )

    def member_client(self, member: str) -> lxdapi.Client:
        """A client for that member's own API alone (whether it answers, what it has)."""
        return self._cached([self.cluster.members[member].address])

    def _cached(self, addresses: list[str]) -> lxdapi.Client:
        key = ",".join(addresses)
        if key not in self._clients:
            cluster = self.cluster
            self._clients[key] = lxdapi.Client(addresses, cluster.port, cluster.project, cluster.credentials)
        return self._clients[key]

    def request(
        self,
        method: str,
        name: str,
        path: str = "",
        body: object = None,
        query: dict[str, str] | None = None,
        wait: float = STATE_WAIT,
    ) -> object:
        """A request about one instance; a member that is down becomes MemberDown naming it."""
        try:
            return self.client(name).call(method, f"/instances/{name}{path}", body, query, wait)
        except lxdapi.Unreachable as exc:
            raise MemberDown(self.member_of.get(name, "?"), exc.log_message) from None
        except lxdapi.ApiError as exc:
            if _offline(exc):
                raise MemberDown(self.member_of.get(name, "?"), exc.log_message) from None
            raise

    # --- where it is ------------------------------------------------------

    def directory(self, name: str) -> str:
        raise GpushellError(f"container {name} is on a cluster member: it has no directory here")

    def exists(self, name: str) -> bool:
        return self.state(name) != MISSING

    def names(self) -> list[str]:
        listed = self.client().get("/instances")
        return sorted(url.rsplit("/", 1)[-1] for url in listed or [])

    # --- making and destroying ----------------------------------------------

    def create(self, reg: Registry, user: User, keys: str) -> str:
        """The container on the user's member, from the image, with its identity and account pushed in.

        Everything is written through the engine's file API into a
        container that has never run: nothing in it is the student's yet.
        """
        self.make(reg, user)
        try:
            self.give_identity(user, keys)
        except BaseException:
            with contextlib.suppress(GpushellError):  # the first error is the one to report
                self.destroy(reg, user.container)
            raise
        return ""

    def make(self, reg: Registry, user: User) -> None:
        """The instance on the user's member, from the image, never started: no identity yet."""
        self.member_of[user.container] = user.member
        try:
            self.client(user.container).call(
                "POST",
                "/instances",
                lxdinstance.body(reg, user, self.cards_for(user)),
                {"target": user.member},
                STATE_WAIT,
            )
        except lxdapi.Unreachable as exc:
            raise MemberDown(user.member, exc.log_message) from None

    def give_identity(
        self, user: User, keys: str, host_keys: dict[str, tuple[bytes, bytes]] | None = None
    ) -> None:
        """Hostname, address, machine id, SSH host keys and the student's account, into a root disk
        fresh from the image (its own files are read back: it never ran).

        host_keys: kind -> (private, public) to keep (a rebuild keeps the old
        ones, so the student's known_hosts stays valid); other kinds are new.
        """
        import time

        from .provision import HOST_KEY_KINDS, SSHD_DROPIN, new_host_key, new_machine_id
        from .template import CUSTOM_FILES

        client, name = self.client(user.container), user.container
        client.push_file(name, "/etc/hostname", f"{name}\n".encode())
        client.push_file(name, "/etc/hosts", hosts_file(name).encode())
        client.push_file(name, "/etc/machine-id", new_machine_id().encode(), mode=0o444)
        client.push_file(name, "/etc/network/interfaces", lxdinstance.interfaces(self.reg, user).encode())
        client.push_file(name, f"/{SSHD_DROPIN}", CUSTOM_FILES[SSHD_DROPIN].encode())
        for kind in HOST_KEY_KINDS:
            private, public = (host_keys or {}).get(kind) or new_host_key(kind, name)
            client.push_file(name, f"/etc/ssh/ssh_host_{kind}_key", private, mode=0o600)
            client.push_file(name, f"/etc/ssh/ssh_host_{kind}_key.pub", public)
        days = int(time.time() // 86400)
        for path, line in lxdinstance.account_lines(user.name, STUDENT_ID, days).items():
            secret = path in ("/etc/shadow", "/etc/gshadow")
            text = client.pull_file(name, path).decode()  # the image's own file: the container never ran
            client.push_file(name, path, lxdinstance.with_line(text, line).encode(), 0, 42 if secret else 0,
                             0o640 if secret else 0o644)  # fmt: skip
        sudoers = f"{user.name} ALL=(ALL:ALL) NOPASSWD: ALL\n".encode()
        client.push_file(name, f"/etc/sudoers.d/gpushell-{user.name}", sudoers, mode=0o440)
        self.install_keys(user, keys)

    def install_keys(self, user: User, keys: str) -> None:
        """The student's authorized_keys inside, owned by them.

        The engine writes as the container's root inside the container, so
        a link the container planted leads nowhere but into the container.
        """
        client, home, uid = self.client(user.container), f"/home/{user.name}", STUDENT_ID
        client.make_directory(user.container, home, uid, uid, 0o700)
        client.make_directory(user.container, f"{home}/.ssh", uid, uid, 0o700)
        client.push_file(user.container, f"{home}/.ssh/authorized_keys", keys.encode(), uid, uid, 0o600)

    def destroy(self, reg: Registry, name: str) -> bool:
        """The instance, and a home volume a rebuild that did not finish left (lxdrebuild.py)."""
        try:
            self.request("DELETE", name)
        except lxdapi.ApiError as exc:
            if _missing(exc):
                return False
            raise
        with contextlib.suppress(lxdapi.ApiError):  # 404 where there is none, the usual case
            self.volume("DELETE", name, lxdinstance.home_volume(name))
        return True

    def archive(self, name: str, directory: str, user: str, when: datetime.datetime) -> str:
        """The engine's backup of the stopped instance, fetched to the front door (lxdbackup.py)."""
        from . import lxdbackup

        config, engine = self.project_config(), self.engine()
        client = self.client(name)
        return lxdbackup.keep(client, self.cluster.project, config, engine, name, directory, user, when)

    # --- files, for `driver sync` ---------------------------------------------

    def driver_versions(self, name: str) -> frozenset[str]:
        """The NVIDIA driver versions the container's library names carry (driverfiles.LIB_DIRS)."""
        from ..gpu import driverfiles

        client = self.client(name)
        names = [entry for path in driverfiles.LIB_DIRS for entry in client.list_directory(name, path)]
        return driverfiles.container_versions(names)

    def put_file(self, name: str, path: str, source: str, mode: int) -> None:
        """Stream the host file source into the container at path, root's; the engine writes it inside."""
        with open(source, "rb") as stream:
            self.client(name).push_file(name, path, stream, mode=mode)

    def delete_file(self, name: str, path: str) -> None:
        self.client(name).delete_file(name, path)

    def custom_volumes(self) -> dict[str, str]:
        """The pool's custom volumes in the project: name -> member."""
        listed = self.client().get(self._volumes(), recursion="1")
        return {str(entry.get("name")): str(entry.get("location") or "") for entry in listed or []}

    def volume(self, method: str, name: str, volume: str, body: object = None) -> object:
        """A request about a custom volume of the pool on container name's member (POST makes it)."""
        endpoint = self._volumes() if method == "POST" else f"{self._volumes()}/{volume}"
        return self.client(name).call(method, endpoint, body, {"target": self.member_of.get(name, "")})

    def has_volume(self, name: str, volume: str) -> bool:
        """Whether that custom volume is on container name's member."""
        try:
            self.volume("GET", name, volume)
        except lxdapi.ApiError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def _volumes(self) -> str:
        return f"/storage-pools/{self.cluster.pool}/volumes/custom"

    def move(self, name: str, member: str) -> None:
        """Move the stopped container to member (the engine copies it there and drops the old copy)."""
        self.request("POST", name, "", {"name": name, "migration": True}, {"target": member}, MOVE_WAIT)
        self.member_of[name] = member

    def move_pool(self, name: str, pool: str) -> None:
        """Move the stopped container's root disk, snapshots and all, to pool on its own member."""
        self.request("POST", name, "", {"name": name, "migration": True, "pool": pool}, wait=MOVE_WAIT)

    def reconfigure(self, user: User, extra_devices: dict[str, dict[str, str]] | None = None) -> None:
        """Make the instance's config and devices the registry's (limits, GPUs, mounts, port).

        The engine applies limits to a running container at once and plugs
        devices in and out; its own keys (volatile.*, image.*) and its lent
        GPUs' devices stay as they are.
        extra_devices: devices of gpushell's own work beside those (a rebuild's home volume).
        """
        current = self.request("GET", user.container)
        assert isinstance(current, dict)
        self._put(user, current, lent_devices(current) | (extra_devices or {}), self.cards_for(user))

    def _put(
        self, user: User, current: dict[str, Any], beside: dict[str, dict[str, str]], cards: lxdinstance.Cards
    ) -> None:
        """The instance as the registry has it (its GPUs from cards), with the devices beside; current: as
        the engine had it (its own keys are kept)."""
        kept = {
            key: value
            for key, value in (current.get("config") or {}).items()
            if key.startswith(lxdinstance.ENGINE_KEYS)
        }
        devices = lxdinstance.devices(self.reg, user, self.cluster, cards)
        # The disk stays on the pool it is on: only `storage migrate` moves it (move_pool).
        devices["root"]["pool"] = lxdinstance.root_pool(current) or self.cluster.pool
        body = {
            "architecture": current.get("architecture"),
            "config": kept | lxdinstance.config(self.reg, user),
            "devices": devices | beside,
            "profiles": list(lxdinstance.PROFILES),
            "ephemeral": False,
            "stateful": False,
            "description": current.get("description", ""),
        }
        self.request("PUT", user.container, "", body)

    def images(self) -> list[dict[str, Any]]:
        """Every image of the project with its aliases, size and properties: one request."""
        return list(self.client().get("/images", recursion="1") or [])

    def listing(self) -> list[dict[str, Any]]:
        """Every instance of the project with its status, member, config and devices: one request."""
        return list(self.client().get("/instances", recursion="1") or [])

    @staticmethod
    def managed_texts(listed: list[dict[str, Any]]) -> dict[str, str]:
        """Each listed instance's lxdinstance.managed() text."""
        return {
            entry["name"]: lxdinstance.managed(entry.get("config") or {}, entry.get("devices") or {})
            for entry in listed
        }

    @staticmethod
    def root_pools(listed: list[dict[str, Any]]) -> dict[str, str]:
        """Each listed instance's root disk pool."""
        return {entry["name"]: lxdinstance.root_pool(entry) for entry in listed}

    # --- state --------------------------------------------------------------

    def state(self, name: str) -> str:
        try:
            found = self.request("GET", name, "/state")
        except lxdapi.ApiError as exc:
            if _missing(exc):
                return MISSING
            raise
        assert isinstance(found, dict)
        return STATES.get(str(found.get("status")), STOPPED)

    def usage(self, user: User) -> dict[str, int]:
        """usage.container_usage's keys, from the engine's own readings of the running container.

        The limits are the registry's, which the engine holds (lxdinstance.config).
        """
        found = self.request("GET", user.container, "/state")
        if not isinstance(found, dict) or found.get("status") != "Running":
            return {}
        memory, cpu = found.get("memory") or {}, found.get("cpu") or {}
        disk = (found.get("disk") or {}).get("root") or {}
        readings = {
            "cpu_ns": cpu.get("usage"),
            "memory_bytes": memory.get("usage"),
            "pids": found.get("processes"),
            "disk_bytes": disk.get("usage"),
        }
        usage = {key: value for key, value in readings.items() if isinstance(value, int) and value >= 0}
        usage.update(memory_limit_bytes=user.limits.memory, pids_limit=user.limits.pids)
        usage["cpu_limit_millis"] = round(user.limits.cpus * 1000)
        return usage

    def inspect(self, name: str) -> tuple[str, int | None]:
        return self.state(name), None  # the init's PID is the member's, not this host's

    def running(self) -> set[str]:
        return {name for name, (state, _) in self.states().items() if state == RUNNING}

    def states(self, listed: list[dict[str, Any]] | None = None) -> dict[str, tuple[str, str]]:
        """Every instance of the project: name -> (state, member), from one request (or a listing)."""
        return {
            entry["name"]: (STATES.get(str(entry.get("status")), STOPPED), entry.get("location") or "")
            for entry in (self.listing() if listed is None else listed)
        }

    def _act(self, name: str, action: str) -> None:
        self.request("PUT", name, "/state", {"action": action, "timeout": 30, "force": action == "stop"})

    def start(self, name: str) -> bool:
        state = self.state(name)
        if state == RUNNING:
            return False
        if state == MISSING:
            raise GpushellError(
                "your container does not exist; ask your administrator", f"no instance {name} on the cluster"
            )
        self._act(name, "unfreeze" if state == FROZEN else "start")
        return state != FROZEN

    def stop(self, name: str) -> None:
        if self.state(name) in (RUNNING, FROZEN):
            self._act(name, "stop")

    def freeze(self, name: str) -> None:
        self._act(name, "freeze")

    def unfreeze(self, name: str) -> None:
        self._act(name, "unfreeze")

    def run_inside(self, name: str, command: list[str], timeout: float = 90.0) -> int:
        """Run command in the running container as its root, environment cleared; its exit status.

        The engine runs it in the container's own namespaces: it acts on
        that container alone, whatever the container made of its files.
        Output is not collected (nothing the container prints reaches root).
        """
        body = {
            "command": command,
            "environment": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
            "wait-for-websocket": False,
            "interactive": False,
            "record-output": False,
        }
        try:
            done = self.request("POST", name, "/exec", body, wait=timeout)
        except lxdapi.ApiError as exc:
            # The engine fails the whole exec with these words when the command exits 127.
            if exc.engine_message == COMMAND_NOT_FOUND:
                return 127
            raise
        status = (done.get("metadata") or {}).get("return") if isinstance(done, dict) else None
        return status if isinstance(status, int) else -1

    def attach(self, name: str, command: list[str]) -> list[str]:
        raise GpushellError(f"container {name} is on a cluster member; its commands run through the engine")

    def block_start(self, name: str) -> Closable:
        raise GpushellError(f"container {name} is on a cluster member: the engine keeps its snapshots")

    # --- lent GPUs ----------------------------------------------------------

    def lend_gpus(self, user: User, gpus: tuple[int, ...]) -> None:
        """Add the lent GPUs' devices; the engine plugs them into a running container at once."""
        current = self.request("GET", user.container)
        assert isinstance(current, dict)
        cards = self.member_gpus(user.member)  # the student's own GPUs and the lent ones, one request
        self._put(user, current, lent_devices(current) | lxdinstance.loan_devices(user, gpus, cards), cards)

    def end_loans(self, user: User, gpus: tuple[int, ...], restart: bool = True) -> bool:
        """Take the lent GPUs' devices out and, if the container runs, restart it (unless not restart).

        A process keeps a GPU it opened after the device is gone, and the
        engine shows no process table (nor would container root's word
        do): the restart is what ends them.  The tick skips it when the
        member's report shows none of the container's processes on them
        (helper/loanwatch.py).  Returns whether it restarted.
        """
        current = self.request("GET", user.container)
        assert isinstance(current, dict)
        held = lent_devices(current)
        ending = {f"{lxdinstance.LOAN_DEVICE}{gpu}" for gpu in gpus} & set(held)
        if not ending:
            return False
        kept = {name: device for name, device in held.items() if name not in ending}
        self._put(user, current, kept, self.cards_for(user))
        return restart and self.restart_running(user.container)

    def restart_running(self, name: str) -> bool:
        """Restart the container if it runs or is frozen (its processes wake up); whether it did."""
        if self.state(name) not in (RUNNING, FROZEN):
            return False
        self.stop(name)
        self.start(name)
        return True

    def add_device(self, name: str, source: str, node: Node) -> None:
        raise GpushellError(f"container {name} is on a cluster member: its GPUs are the engine's devices")

    def remove_device(self, name: str, node: Node) -> None:
        raise GpushellError(f"container {name} is on a cluster member: its GPUs are the engine's devices")

    def device_holders(self, name: str, node: Node) -> list[int]:
        return []

    # --- the cluster --------------------------------------------------------

    def has_image(self, alias: str) -> bool:
        """Whether the project has an image of that alias (what create makes containers from)."""
        try:
            self.client().get(f"/images/aliases/{alias}")
        except lxdapi.ApiError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def engine(self) -> str:
        """Which engine the cluster runs: "lxd" or "incus" (its own word; "" where it gives none)."""
        answer = self.client().get("") or {}
        return str((answer.get("environment") or {}).get("server") or "")

    def silent(self, member: str) -> str | None:
        """Why the member's own API does not answer; None when it does."""
        try:
            self.member_client(member).get("")
        except GpushellError as exc:
            return exc.log_message
        return None

    def member_gpus(self, member: str) -> lxdinstance.Cards:
        """The NVIDIA GPUs the member's own engine lists, by /dev/nvidiaN number."""
        return lxdinstance.gpu_cards(self.member_client(member).get("/resources"))

    def cards_for(self, user: User) -> lxdinstance.Cards:
        """The GPUs of the user's member when the user has any (one request), else none."""
        if not gpu_numbers(user.gpus, self.cluster.members[user.member]):
            return {}
        return self.member_gpus(user.member)

    def project_config(self) -> dict[str, str]:
        """The project's config: the restrictions that bound what gpushell's certificate may do."""
        answer = self.client().get(f"/projects/{self.cluster.project}") or {}
        config = answer.get("config") if isinstance(answer, dict) else None
        return {str(key): str(value) for key, value in (config or {}).items()}

    def members(self) -> list[dict[str, object]]:
        """The engine's word on each member: server_name, status (Online, Offline, ...), message."""
        return list(self.client().get("/cluster/members", recursion="1") or [])

    def gpu_reports(self) -> dict[str, GpuReport | None]:
        """Each member's GPU report (`publish-gpus` writes it), None where it has none that parses."""
        from ..core import gpureport  # the tick's, never a login's

        return {str(entry.get("server_name")): gpureport.of_member(entry) for entry in self.members()}


def lent_devices(instance: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The instance's lent GPUs' devices (lxdinstance.LOAN_DEVICE)."""
    devices = instance.get("devices") or {}
    return {name: device for name, device in devices.items() if name.startswith(lxdinstance.LOAN_DEVICE)}


def _missing(error: lxdapi.ApiError) -> bool:
    """Whether the engine says the thing asked about does not exist (HTTP 404)."""
    return error.http_status == 404


# The engine's words (LXD 5.0 and Incus) when the instance's member is away, or is back on the network
# but not yet in touch with the cluster's database (dqlite in LXD, cowsql in Incus): either way the
# student's line is the same, and trying again later is the answer.
AWAY = ("offline", "unreachable", "no route", "connection refused", "leader server", "begin transaction")


def _offline(error: lxdapi.ApiError) -> bool:
    """Whether the engine refused because the instance's member is away from the cluster."""
    text = error.log_message.lower()
    return any(words in text for words in AWAY)
