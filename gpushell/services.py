"""What the helper and gpushell-admin do to one user's container and forward.

Side effects live here, composed from the pure modules; both the root
helper (for the student) and gpushell-admin (for the admin) call these.
"""

from __future__ import annotations

from . import forward, iptables
from .containers import RUNNING, sshd_answers, wait_for_sshd
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
    """Make the user's DNAT rule exist and be right; True when it had to change."""
    # One writer at a time: two users' first logins after a reboot would
    # otherwise both create the chain.
    with locked(f"{ctx.paths.run_dir}/forward.lock"):
        table = iptables.read_nat()
        return iptables.apply(forward.ensure_user_lines(table, ctx.registry.chain, user))


def remove_forward(ctx: Context, name: str) -> bool:
    with locked(f"{ctx.paths.run_dir}/forward.lock"):
        table = iptables.read_nat()
        return iptables.apply(forward.remove_user_lines(table, ctx.registry.chain, name))


def ensure_running(ctx: Context, user: User) -> bool:
    """Start the container if needed and wait for its sshd; True when it was started.

    The common case, a running container, is settled by one connect to its
    sshd, without asking LXC.
    """
    if sshd_answers(str(user.ip), timeout=0.2):
        return False
    started = ctx.driver.state(user.container) != RUNNING
    if started:
        ctx.driver.start(user.container)
    wait_for_sshd(str(user.ip), ctx.registry.start_timeout)
    return started


def describe(ctx: Context, user: User, state: str | None = None, **extra: object) -> dict[str, object]:
    """What the student's side shows: plain data, rendered there."""
    return {
        "user": user.name,
        "host": ctx.registry.hostname,
        "port": user.port,
        "container": user.container,
        "ip": str(user.ip),
        "state": state or ctx.driver.state(user.container),
        "idle_timeout": ctx.registry.idle_timeout,
        **extra,
    }
