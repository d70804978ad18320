"""The LXC backend: root-owned containers under one lxcpath, through LXC's own tools."""

from __future__ import annotations

import os
import time

# The C core of `socket`, for the login path (loginproc.py).
from _socket import AF_UNIX, SOCK_STREAM, socket

from ..core.errors import GpushellError
from ..system import signalpool
from ..system.runner import LARGE_OUTPUT, run
from .backend import MISSING, RUNNING, ContainerDriver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.model import Registry, User
    from ..gpu.gpudevices import Node
    from .lxcdevices import Container

# What lxc-start prints (exit status 0) for a container that runs already.
ALREADY_RUNNING = "Container is already running"
# The longest abstract socket name LXC uses as it is (sun_path less its two NULs);
# longer ones it replaces with a hash.
MAX_LXC_SOCKET_NAME = 105
FREEZE_TIMEOUT = 30.0  # seconds a freeze may wait for every task to stop
FREEZE_POLL = 0.002  # the first look after asking; doubled up to 0.1 s


class LxcDriver(ContainerDriver):
    """Root-owned LXC containers under one lxcpath, through LXC's own tools.

    Not python-lxc here: importing it (liblxc's set-up included) cost about
    10 ms per helper call on the reference machine, `lxc-info` about 1.3 ms,
    and this sits on every student's login.  inspect(), for gpushell-admin
    list, off that path, uses python-lxc.
    """

    def __init__(self, lxcpath: str) -> None:
        self.lxcpath = lxcpath

    def _args(self, name: str) -> list[str]:
        return ["-P", self.lxcpath, "-n", name]

    def directory(self, name: str) -> str:
        return os.path.join(self.lxcpath, name)

    def attach(self, name: str, command: list[str]) -> list[str]:
        return ["lxc-attach", *self._args(name), "--clear-env", "--", *command]

    def create(self, reg: Registry, user: User, keys: str) -> str:
        from . import provision  # the copy and the config: admin work, off the login path

        return provision.create(reg, user, keys)

    def destroy(self, reg: Registry, name: str) -> bool:
        from . import provision

        return provision.destroy(reg, name)

    def names(self) -> list[str]:
        """Containers defined in lxcpath: a directory with a config (hidden ones are staging)."""
        try:
            entries = os.listdir(self.lxcpath)
        except FileNotFoundError:
            return []
        return sorted(name for name in entries if not name.startswith(".") and self.exists(name))

    def inspect(self, name: str) -> tuple[str, int | None]:
        import lxc  # python-lxc: no process per container; too slow to load for the login path

        container = lxc.Container(name, self.lxcpath)
        if not container.defined:
            return MISSING, None
        state = str(container.state)
        pid = int(container.init_pid)
        return state, (pid if state == RUNNING and pid > 0 else None)

    def state(self, name: str) -> str:
        if not self.exists(name):
            return MISSING
        result = run(["lxc-info", *self._args(name), "-sH"], check=False)
        return result.stdout.strip() or MISSING

    def may_be_running(self, name: str) -> bool:
        """Whether an LXC monitor listens for the container: a connect, no process.

        lxc-start's monitor serves a running (or starting, or stopping)
        container on the abstract socket `@LXCPATH/NAME/command`, the one
        lxc-info asks; with none there, the container is stopped.  A refused
        connect costs microseconds, where probing a stopped container's sshd
        waits out its timeout.  Nothing is sent: the monitor sees a client
        come and go.  Anyone may bind an abstract name, but a false "maybe"
        only costs the probe, and lxc-start decides in the end.
        """
        name_text = f"{self.lxcpath}/{name}/command"
        if len(name_text) > MAX_LXC_SOCKET_NAME:  # LXC hashed it: do not guess
            return True
        client = socket(AF_UNIX, SOCK_STREAM)
        try:
            client.connect("\0" + name_text)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True
        finally:
            client.close()
        return True

    def running(self) -> set[str]:
        """The names of every running container under lxcpath: one lxc-ls, not an lxc-info each."""
        result = run(["lxc-ls", "-P", self.lxcpath, "--running", "-1"], max_output=LARGE_OUTPUT)
        return set(result.stdout.split())

    def start(self, name: str) -> bool:
        if not self.exists(name):
            raise GpushellError("your container does not exist", f"container {name} is not defined")
        log = os.path.join(self.lxcpath, name, "lxc.log")
        # Daemonized: lxc-start returns once init runs, with its standard
        # streams on /dev/null, so the student's session never waits on it.
        # No lxc-info first: that was one more process on every cold login.
        # lxc-start leaves a running container alone, exits 0 and says so.
        signalpool.widen()  # the container's own pool of queued signals, not its neighbours'
        result = run(["lxc-start", *self._args(name), "-o", log, "-l", "WARN"], check=False)
        if result.returncode == 0:
            return ALREADY_RUNNING not in result.stderr
        if self.state(name) == RUNNING:  # started by someone else meanwhile
            return False
        raise GpushellError(
            "your container failed to start",
            f"lxc-start {name} exited {result.returncode}: {result.stderr.strip()}; see {log}",
        )

    def stop(self, name: str, timeout: int = 10) -> None:
        if not self.exists(name) or self.state(name) != RUNNING:
            return
        # A clean shutdown first (its init flushes the journal), a kill after timeout.
        result = run(["lxc-stop", *self._args(name), "-t", str(timeout)], check=False, timeout=timeout + 30)
        if result.returncode != 0 and self.state(name) == RUNNING:
            raise GpushellError("your container failed to stop", f"lxc-stop {name}: {result.stderr.strip()}")

    def freeze(self, name: str) -> None:
        # The freezer cgroup stops every task of the container at once, so
        # a copy of its rootfs taken meanwhile is one point in time.  The
        # kernel is asked first and watched closely: lxc-freeze sleeps a whole
        # second whenever its first look finds the cgroup still FREEZING, as
        # it nearly always does, and finds it FROZEN this way.  lxc-freeze
        # still runs, for LXC's own record of the state.
        _, pid = self.info(name)
        if pid is not None and ask_freezer(pid):
            deadline = time.monotonic() + FREEZE_TIMEOUT
            pause = FREEZE_POLL
            while not cgroup_frozen(pid) and time.monotonic() < deadline:
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        # Bounded: a task stuck in the kernel keeps a cgroup FREEZING for ever.
        result = run(["lxc-freeze", *self._args(name)], check=False, timeout=FREEZE_TIMEOUT)
        if result.returncode != 0:
            raise GpushellError(
                "your container could not be paused", f"lxc-freeze {name}: {result.stderr.strip()}"
            )

    def unfreeze(self, name: str) -> None:
        result = run(["lxc-unfreeze", *self._args(name)], check=False)
        if result.returncode != 0:
            raise GpushellError(
                "your container could not be resumed; run: restart",
                f"lxc-unfreeze {name}: {result.stderr.strip()}",
            )

    def info(self, name: str) -> tuple[str, int | None]:
        if not self.exists(name):
            return MISSING, None
        result = run(["lxc-info", *self._args(name), "-s", "-p"], check=False)
        return parse_info(result.stdout)

    def cgroup_frozen(self, pid: int) -> bool:
        return cgroup_frozen(pid)

    def block_start(self, name: str) -> socket:
        """Hold the container's LXC command socket name, so no lxc-start can run it.

        lxc-start (anyone's, root's own included, and lxc-autostart) binds
        the abstract socket `@LXCPATH/NAME/command` for the container's
        whole life and gives up at once when it is taken ("Failed to set up
        command socket").  Bound but never listening: lxc-info's connect is
        refused, so the container still reads STOPPED to everyone.  The
        kernel frees the name when this process dies, so a killed helper
        leaves no guard behind.
        """
        name_text = f"{self.lxcpath}/{name}/command"
        if len(name_text) > MAX_LXC_SOCKET_NAME:  # LXC hashes it: we cannot hold the same name
            raise GpushellError(
                "your container cannot be held still for this; ask your admin",
                f"lxcpath {self.lxcpath} too long to hold {name}'s LXC socket name; use a shorter one",
            )
        guard = socket(AF_UNIX, SOCK_STREAM)
        try:
            guard.bind("\0" + name_text)
        except OSError as exc:
            guard.close()
            raise GpushellError(
                "your container is starting or running; try again in a moment",
                f"cannot block starts of {name}: {exc} (an LXC monitor holds {name_text})",
            ) from None
        return guard

    # Devices, live: lxcdevices.py does the work (a GPU lent, off the login path).

    def _running_container(self, name: str) -> Container | None:
        from . import lxcdevices

        return lxcdevices.find(name, self.info(name)[1])

    def add_device(self, name: str, source: str, node: Node) -> None:
        from . import lxcdevices

        container = self._running_container(name)
        if container is None:
            return  # stopped: its config gives it the node at its next start
        try:
            # The node before the rule: a failure between leaves a node that will not open.
            lxcdevices.add_node(container, source, node)
            lxcdevices.allow(self.lxcpath, name, container, node)
        finally:
            container.close()

    def remove_device(self, name: str, node: Node) -> None:
        from . import lxcdevices

        container = self._running_container(name)
        if container is None:
            return
        try:
            lxcdevices.deny(self.lxcpath, name, container, node)
            lxcdevices.remove_node(container, node)
        finally:
            container.close()

    def device_holders(self, name: str, node: Node) -> list[int]:
        from . import lxcdevices

        container = self._running_container(name)
        if container is None:
            return []
        try:
            return lxcdevices.holders(container, node)
        finally:
            container.close()


def parse_info(text: str) -> tuple[str, int | None]:
    """State and PID from `lxc-info -s -p` lines `State: RUNNING`, `PID: 123` (pure)."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        values[key.strip()] = value.strip()
    state = values.get("State") or MISSING
    pid = values.get("PID", "")
    return state, int(pid) if pid.isascii() and pid.isdigit() and int(pid) > 1 else None


def _freezer(pid: int) -> tuple[str, str, str] | None:
    """(file, freeze word, frozen word) of the freezer of pid's container, or None if unknown.

    cgroup v1: `freezer.state` reads FROZEN only once all tasks, those in
    sub-cgroups the container made included, are frozen (FREEZING until
    then); v2: `cgroup.freeze` is asked and `cgroup.events` says `frozen 1`.
    The container's level is the `lxc.payload.NAME` one the host made,
    whatever the container nests below it (cgroups.container_level).
    """
    from . import cgroups  # only root work on a rootfs asks

    v1 = cgroups.controller_dir(pid, "freezer")
    if v1 is not None:
        return f"{v1}/freezer.state", "FROZEN", "FROZEN"
    path = cgroups.controller_path(_read_small(f"/proc/{pid}/cgroup"), "")
    if path is None:
        return None
    return f"{cgroups.ROOT}{cgroups.container_level(path)}/cgroup.freeze", "1", "frozen 1"


def ask_freezer(pid: int) -> bool:
    """Ask the kernel to freeze pid's container; False where its freezer is unknown or refuses."""
    freezer = _freezer(pid)
    if freezer is None:
        return False
    try:
        with open(freezer[0], "w", encoding="ascii") as stream:
            stream.write(freezer[1])
    except OSError:
        return False
    return True


def cgroup_frozen(pid: int) -> bool:
    """Whether the freezer cgroup of pid's container says every task is stopped, none pending."""
    freezer = _freezer(pid)
    if freezer is None:
        return False
    path, _, frozen = freezer
    if path.endswith("/cgroup.freeze"):
        return frozen in _read_small(path[: -len("cgroup.freeze")] + "cgroup.events").splitlines()
    return _read_small(path).strip() == frozen


def _read_small(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read(4096)
    except OSError:
        return ""
