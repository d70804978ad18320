"""What the helper and gpushell-admin do to one user's container and forward.

Side effects live here, composed from the pure modules; both the root
helper (for the student) and gpushell-admin (for the admin) call these.
"""

from __future__ import annotations

import time

from . import forward, iptables, listening
from .errors import ExitStatus, GpushellError
from .files import read_private, write_private
from .lock import locked

TYPE_CHECKING = False  # `typing` stays off the login path
if TYPE_CHECKING:
    from .containers import ContainerDriver
    from .model import Registry, User
    from .paths import Paths


class Context:
    """Where an action happens: install paths, the registry, the container backend."""

    __slots__ = ("driver", "paths", "registry")

    def __init__(self, paths: Paths, registry: Registry, driver: ContainerDriver) -> None:
        self.paths, self.registry, self.driver = paths, registry, driver


def ensure_forward(ctx: Context, user: User) -> bool:
    """Make the user's DNAT rule exist and be right; True when it had to change.

    The rules are read only when the ruleset changed since this user's rule
    was last verified (nf_tables' generation counter, kept in a stamp):
    a login then costs the same with ten students or a thousand.
    """
    wanted = " ".join(forward.user_rule(ctx.registry.chain, user))
    stamp = f"{ctx.paths.run_dir}/forward-{user.name}.stamp"
    # One writer at a time: two users' first logins after a reboot would
    # otherwise both create the chain.
    with locked(f"{ctx.paths.run_dir}/forward.lock"):
        before = iptables.generation()
        if before is not None and read_stamp(stamp) == f"{before} {wanted}":
            return False
        table = iptables.read_nat()
        changed = iptables.apply(forward.ensure_user_lines(table, ctx.registry.chain, user))
        after = iptables.generation()
        # Stamp only if nobody else changed the ruleset between our read and now.
        if before is not None and after == before + int(changed):
            write_private(stamp, f"{after} {wanted}")
        else:
            write_private(stamp, "")
        return changed


MAX_STAMP = 4096  # a generation number and one rule


def read_stamp(path: str) -> str:
    return read_private(path, MAX_STAMP) or ""


def remove_forward(ctx: Context, name: str) -> bool:
    with locked(f"{ctx.paths.run_dir}/forward.lock"):
        write_private(f"{ctx.paths.run_dir}/forward-{name}.stamp", "")
        table = iptables.read_nat()
        return iptables.apply(forward.remove_user_lines(table, ctx.registry.chain, name))


def ensure_running(ctx: Context, user: User) -> bool:
    """Start the container if needed and wait for its sshd; True when it was started."""
    started = start_unless_answering(ctx, user)
    if started is not None:
        wait_for_sshd(ctx, user)
    return bool(started)


def start_unless_answering(ctx: Context, user: User) -> bool | None:
    """None when the container's sshd listens already; else start it if stopped (True) and return.

    The common case, a running container, is settled by reading its socket
    table (listening.py), found through its init's PID as noted in the run
    directory, without asking LXC.  The caller waits for sshd
    (wait_for_sshd), and can do other work while the container boots.
    """
    if sshd_listening(ctx, user):
        return None
    return ctx.driver.start(user.container)


def sshd_listening(ctx: Context, user: User) -> bool:
    pid = init_pid(ctx, user)
    return pid is not None and listening.listens(pid)


MAX_PID_NOTE = 256  # a PID, a start time and a container name


def init_pid(ctx: Context, user: User) -> int | None:
    """The container's init PID; None when the container is not running.

    Noted in the run directory with the process's start time and the
    container's name, and used while all three still hold: a login then
    asks LXC nothing (lxc-info is a process, ~3 ms).  A container with no
    LXC monitor is stopped, and costs only that check (may_be_running).
    """
    note = f"{ctx.paths.run_dir}/init-{user.name}.pid"
    noted = (read_private(note, MAX_PID_NOTE) or "").split(" ")
    this_container = len(noted) == 3 and noted[0].isdigit() and noted[2] == user.container
    if this_container and listening.start_time(int(noted[0])) == noted[1]:
        return int(noted[0])  # the same process as when noted
    if not ctx.driver.may_be_running(user.container):
        return None
    pid = ctx.driver.init_pid(user.container)
    started = None if pid is None else listening.start_time(pid)
    if pid is None or started is None:
        return None
    write_private(note, f"{pid} {started} {user.container}")
    return pid


def wait_for_sshd(ctx: Context, user: User) -> float:
    """Wait until the container's sshd listens; return the seconds it took.

    sshd listens only once its configuration and host keys are loaded, so
    a client can log in as soon as it does.
    """
    timeout = ctx.registry.start_timeout
    began = time.monotonic()
    deadline = began + timeout
    while not sshd_listening(ctx, user):
        if time.monotonic() >= deadline:
            raise GpushellError(
                f"your container did not answer on port {listening.SSH_PORT} within {timeout:.0f} s",
                f"sshd of {user.container} not listening after {timeout} s",
                ExitStatus.TIMEOUT,
            )
        # Reading a few hundred bytes of /proc costs microseconds: poll often,
        # so the login says "ready" within a couple of ms of sshd listening.
        time.sleep(0.002)
    return time.monotonic() - began


def describe(ctx: Context, user: User, state: str | None = None, /, **extra: object) -> dict[str, object]:
    """What the student's side shows: plain data, rendered there."""
    if ctx.registry.disabled_actions:  # the login shell leaves these out of its menu
        extra = {"disabled": ",".join(ctx.registry.disabled_actions), **extra}
    return {
        "user": user.name,
        "host": ctx.registry.hostname,
        "port": user.port,
        "container": user.container,
        "ip": user.address,
        "state": state or ctx.driver.state(user.container),
        "idle_timeout": ctx.registry.idle_timeout,
        **extra,
    }
