"""Containers: the small interface the helper uses, and its LXC backend.

The helper and the menu know only `ContainerDriver`; a multi-host backend
(an Incus cluster, say) would implement the same few methods.
"""

from __future__ import annotations

import os
import time

# The C core of `socket`, for the login path (loginproc.py).
from _socket import AF_INET, AF_UNIX, SOCK_STREAM, socket

from ..core.errors import ExitStatus, GpushellError
from ..system.runner import LARGE_OUTPUT, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from ..core.model import Registry

    class Closable(Protocol):  # what block_start returns: a socket, for LXC
        def close(self) -> None: ...


RUNNING, STOPPED, MISSING, FROZEN = "RUNNING", "STOPPED", "MISSING", "FROZEN"
# What lxc-start prints (exit status 0) for a container that runs already.
ALREADY_RUNNING = "Container is already running"
# The longest abstract socket name LXC uses as it is (sun_path less its two NULs);
# longer ones it replaces with a hash.
MAX_LXC_SOCKET_NAME = 105
FREEZE_TIMEOUT = 30.0  # seconds lxc-freeze may wait for every task to stop


class ContainerDriver:
    """Where a student's container runs: start, stop, and its state."""

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


def backend_for(reg: Registry) -> ContainerDriver:
    """The container backend the registry asks for: LXC under its lxcpath, the only one yet.

    Everything above the backend gets its driver here, so a second backend
    is one class and one branch.
    """
    return LxcDriver(reg.lxcpath)


class LxcDriver(ContainerDriver):
    """Root-owned LXC containers under one lxcpath, through LXC's own tools.

    Not python-lxc here: importing it (liblxc's set-up included) cost about
    10 ms per helper call on the reference machine, `lxc-info` about 1.3 ms,
    and this sits on every student's login.  gpushell-admin list, off that
    path, uses python-lxc.
    """

    def __init__(self, lxcpath: str) -> None:
        self.lxcpath = lxcpath

    def _args(self, name: str) -> list[str]:
        return ["-P", self.lxcpath, "-n", name]

    def _defined(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.lxcpath, name, "config"))

    def state(self, name: str) -> str:
        if not self._defined(name):
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
        if not self._defined(name):
            raise GpushellError("your container does not exist", f"container {name} is not defined")
        log = os.path.join(self.lxcpath, name, "lxc.log")
        # Daemonized: lxc-start returns once init runs, with its standard
        # streams on /dev/null, so the student's session never waits on it.
        # No lxc-info first: that was one more process on every cold login.
        # lxc-start leaves a running container alone, exits 0 and says so.
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
        if not self._defined(name) or self.state(name) != RUNNING:
            return
        # A clean shutdown first (its init flushes the journal), a kill after timeout.
        result = run(["lxc-stop", *self._args(name), "-t", str(timeout)], check=False, timeout=timeout + 30)
        if result.returncode != 0 and self.state(name) == RUNNING:
            raise GpushellError("your container failed to stop", f"lxc-stop {name}: {result.stderr.strip()}")

    def freeze(self, name: str) -> None:
        # The freezer cgroup stops every task of the container at once, so
        # a copy of its rootfs taken meanwhile is one point in time.
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
        if not self._defined(name):
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


def parse_info(text: str) -> tuple[str, int | None]:
    """State and PID from `lxc-info -s -p` lines `State: RUNNING`, `PID: 123` (pure)."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        values[key.strip()] = value.strip()
    state = values.get("State") or MISSING
    pid = values.get("PID", "")
    return state, int(pid) if pid.isascii() and pid.isdigit() and int(pid) > 1 else None


def cgroup_frozen(pid: int) -> bool:
    """Whether the freezer cgroup of pid's container says FROZEN: every task stopped, none pending.

    cgroup v1: `freezer.state` reads FROZEN only once all tasks, those in
    sub-cgroups the container made included, are frozen (FREEZING until
    then); v2: `cgroup.events` says `frozen 1`.  The container's level is
    the `lxc.payload.NAME` one the host made, whatever the container nests
    below it (cgroups.container_level).
    """
    from . import cgroups  # only root work on a rootfs asks

    v1 = cgroups.controller_dir(pid, "freezer")
    if v1 is not None:
        return _read_small(f"{v1}/freezer.state").strip() == "FROZEN"
    path = cgroups.controller_path(_read_small(f"/proc/{pid}/cgroup"), "")
    if path is None:
        return False
    events = _read_small(f"{cgroups.ROOT}{cgroups.container_level(path)}/cgroup.events")
    return "frozen 1" in events.splitlines()


def _read_small(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read(4096)
    except OSError:
        return ""


def sshd_answers(ip: str, port: int = 22, timeout: float = 0.01) -> bool:
    """True when something accepts a TCP connection at ip:port (an IP literal: no DNS).

    A container on the local bridge answers in well under a millisecond; the
    short timeout only bounds the wait for an address that is not up yet
    (no ARP reply), so a poll never stalls for long.
    """
    probe = socket(AF_INET, SOCK_STREAM)
    try:
        probe.settimeout(timeout)
        probe.connect((ip, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


MIN_POLL, MAX_POLL = 0.003, 0.05  # seconds between two probes of a booting sshd
QUICK_BOOT = 1.0  # seconds a container takes to boot on a host with cores to spare (~0.35)


def poll_interval(waited: float) -> float:
    """Seconds to sleep before the next probe, after waiting `waited` seconds.

    Every 3 ms while a boot is still quick, so a lone cold start is noticed
    at once.  Past that the host is busy (a class logging in at once): a
    fraction of the wait so far, so twenty boots sharing two cores do not
    spend them on thousands of probes, and none is noticed more than about
    3 % later than it could be.
    """
    if waited < QUICK_BOOT:
        return MIN_POLL
    return min(MAX_POLL, waited / 32)


def wait_for_sshd(ip: str, timeout: float, port: int = 22) -> float:
    """Wait until sshd accepts a TCP connection on ip:port; return the seconds it took.

    sshd listens only once its configuration and host keys are loaded, so an
    accepted connection means a client can log in now.  (Waiting for the
    greeting as well would add sshd's per-connection re-exec, ~9 ms, to
    every login, and log a dropped pre-auth connection in the container.)
    """
    began = time.monotonic()
    deadline = began + timeout
    while not sshd_answers(ip, port):
        if time.monotonic() >= deadline:
            raise GpushellError(
                f"your container did not answer on port {port} within {timeout:.0f} s",
                f"sshd at {ip}:{port} not ready after {timeout} s",
                ExitStatus.TIMEOUT,
            )
        time.sleep(poll_interval(time.monotonic() - began))
    return time.monotonic() - began
