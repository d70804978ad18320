"""What the helper and gpushell-admin do to one user's container and forward.

Side effects live here, composed from the pure modules; both the root
helper (for the student) and gpushell-admin (for the admin) call these.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import forward, iptables
from .containers import RUNNING, ContainerDriver, wait_for_sshd
from .lock import locked
from .model import Registry, User
from .paths import Paths


@dataclasses.dataclass
class Context:
    paths: Paths
    registry: Registry
    driver: ContainerDriver


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
    """Start the container if needed and wait for its sshd; True when it was started."""
    started = ctx.driver.state(user.container) != RUNNING
    if started:
        ctx.driver.start(user.container)
    wait_for_sshd(str(user.ip), ctx.registry.start_timeout)
    return started


def describe(ctx: Context, user: User, **extra: Any) -> dict[str, Any]:
    """What the student's side shows: plain data, rendered there."""
    return {
        "user": user.name,
        "host": ctx.registry.hostname,
        "port": user.port,
        "container": user.container,
        "ip": str(user.ip),
        "state": ctx.driver.state(user.container),
        "idle_timeout": ctx.registry.idle_timeout,
        **extra,
    }
