"""What the helper and gpushell-admin do to one user's container and forward.

Side effects live here, composed from the pure modules; both the root
helper (for the student) and gpushell-admin (for the admin) call these.
"""

from __future__ import annotations

from ..containers.readiness import sshd_answers, wait_for_sshd
from ..core import forward, menu
from ..system import bootslots, forwardstamps, iptables
from ..system.bootslots import BootSlot
from ..system.lock import locked
from .context import Context as Context  # where everyone has found it

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..core.forward import NatTable
    from ..core.model import Registry, User
    from ..system.listeners import ListenerProbe


def ensure_forward(ctx: Context, user: User) -> bool:
    """Make the user's DNAT rule exist and be right; True when it had to change.

    The rules are read only when the ruleset changed since this user's rule
    was last seen right (nf_tables' generation counter, forwardstamps.py):
    a login then costs the same with ten students or a thousand.
    """
    wanted = stamped_rule(ctx.registry, user)
    # One writer at a time: two users' first logins after a reboot would
    # otherwise both create the chain.
    with locked(ctx.paths.forward_lock):
        before = iptables.generation()
        if before is not None and forwardstamps.known_right(ctx.paths, user.name, before, wanted):
            return False
        from ..system import registry_store  # off the fast path: the whole registry

        lab = registry_store.load_all(ctx.paths)
        if ensure_isolation(lab):
            before = iptables.generation()
        table = iptables.read_nat()
        changed = iptables.apply(
            forward.ensure_user_lines(table, ctx.registry.chain, user, ctx.registry.cluster)
        )
        after = iptables.generation()
        # Stamp only if nobody else changed the ruleset between our read and now.
        if before is not None and after == before + int(changed):
            forwardstamps.remember(ctx.paths, user.name, after, wanted)
            if not changed:  # the table read is the ruleset now: vouch for the lab if it is all right
                remember_lab_if_right(ctx, after, table, lab)
        else:
            forwardstamps.forget(ctx.paths, user.name)
        return changed


def stamped_rule(reg: Registry, user: User) -> str:
    """The user's rule as the stamps name it: both stamps and the login's check use this text."""
    return " ".join(forward.user_rule(reg.chain, user, reg.cluster))


def ensure_isolation(lab: Registry) -> bool:
    """Rebuild the isolation tables from the whole registry if they are missing or changed.

    On the login's slow path only (the ruleset moved since this user's last
    check): so a host where `apply` did not run at boot still gets the
    tables before a container starts, and a failure fails the login closed.
    """
    from ..system import nftrun  # off the fast path: ipaddress

    return nftrun.ensure(lab)


def remember_lab_if_right(ctx: Context, generation: int, table: NatTable, lab: Registry) -> None:
    """Vouch for every student's forward at generation when the chain holds exactly the registry's.

    The isolation tables were checked at that generation already; the
    class logging in next finds their rules in the lab's stamp.
    """
    from ..core import chaincheck

    if chaincheck.chain_matches(table, lab):
        forwardstamps.remember_lab(
            ctx.paths, generation, (stamped_rule(lab, user) for user in lab.users.values())
        )


def remove_forward(ctx: Context, name: str) -> bool:
    with locked(ctx.paths.forward_lock):
        forwardstamps.forget(ctx.paths, name)
        table = iptables.read_nat()
        return iptables.apply(forward.remove_user_lines(table, ctx.registry.chain, name))


def ensure_running(ctx: Context, user: User) -> bool:
    """Start the container if needed and wait for its sshd; True when it was started."""
    with boot_slot(ctx) as slot:
        started = start_unless_answering(ctx, user, slot)
        if started is not None:
            wait_until_ready(ctx, user, slot)
    return bool(started)


def boot_slot(ctx: Context) -> BootSlot:
    """One of the host's boot slots, for start_unless_answering to take if the container must boot.

    No slots on a cluster: its members boot on CPUs of their own.
    """
    count = 0 if ctx.registry.cluster is not None else bootslots.host_cpus()
    return BootSlot([ctx.paths.boot_slot(number) for number in range(count)])


def wait_until_ready(ctx: Context, user: User, slot: BootSlot | None = None) -> None:
    """Until the container's sshd takes connections, where the student's forward leads.

    On one host the kernel is asked whether sshd listens (listeners.py),
    where a connect would cost the booting container an sshd re-exec and a
    journal line; on a cluster, or when the container's namespace cannot be
    reached, the probe connects.  The boot's slot goes back once sshd
    answers, or earlier if the boot holds it too long (bootslots.HOLD).
    """
    address, port = forward.destination(user, ctx.registry.cluster)
    probe = None if ctx.registry.cluster is not None else listener_probe(ctx, user)

    def still_booting() -> bool:  # asked every half second of the wait
        if slot is not None:
            slot.give_back_when_held()
        return ctx.driver.may_be_running(user.container)

    try:
        wait_for_sshd(
            address,
            ctx.registry.start_timeout,
            port,
            greeting=ctx.registry.cluster is not None,
            running=still_booting,
            listens=None if probe is None else lambda: probe.listens(port, address),
        )
    finally:
        if slot is not None:
            slot.give_back()
        if probe is not None:
            probe.close()


def listener_probe(ctx: Context, user: User) -> ListenerProbe | None:
    """A sock_diag probe in the container's network namespace, or None to connect instead."""
    from ..system.listeners import ListenerProbe  # the cold path only

    _state, init_pid = ctx.driver.info(user.container)
    if init_pid is None:
        return None
    try:
        return ListenerProbe(init_pid)
    except OSError:
        return None


def start_unless_answering(ctx: Context, user: User, slot: BootSlot | None = None) -> bool | None:
    """None when the container's sshd answers already; else start it if stopped (True) and return.

    With slot, the start waits its turn for one of the host's boot slots
    (bootslots.py) and holds it; wait_until_ready gives it back.

    The common case, a running container, is settled by one connect to its
    sshd, without asking LXC.  A surely stopped one (no LXC monitor) is
    started without that probe, which it would make wait its whole 3 ms.
    The caller waits for sshd (wait_for_sshd), and can do other work while
    the container boots.
    """
    # 3 ms: a running container answers a connect on the bridge in well under one;
    # on a cluster its member's proxy accepts while it runs, across the lab's LAN.
    address, port = forward.destination(user, ctx.registry.cluster)
    timeout = 0.003 if ctx.registry.cluster is None else 0.05
    if ctx.driver.may_be_running(user.container) and sshd_answers(address, port, timeout):
        return None
    if slot is not None:
        slot.take()
    return start(ctx, user)


def start(ctx: Context, user: User) -> bool:
    """Start the container (True when it was stopped), its disk quota set first: every start's way.

    The login's, apply's and the admin's starts come here, and so does
    driver sync's, so a `set disk=` since the last start holds from this one.
    """
    if ctx.registry.storage != "dir":
        apply_disk_quota(ctx, user)
    started = ctx.driver.start(user.container)
    if started and ctx.registry.lending is not None:
        from . import loans  # the student's borrowed GPUs, which the config does not name

        loans.give_lent_after_start(ctx, user)
    return started


def apply_disk_quota(ctx: Context, user: User) -> None:
    """The registry's disk limit on the container's storage, as the other limits: at each start.

    Only where the storage holds one (btrfs); `dir` has no quota and no call.
    """
    from ..containers import storage  # off the login path but for a start on quota storage

    storage.for_registry(ctx.registry).set_quota(ctx.driver.directory(user.container), user.limits.disk)


def describe(ctx: Context, user: User, state: str | None = None, /, **extra: object) -> dict[str, object]:
    """What the student's side shows: plain data, rendered there."""
    disabled = ctx.registry.disabled_actions + (() if ctx.registry.lending else menu.LENDING_WORDS)
    if disabled:  # the login shell leaves these out of its menu
        extra = {"disabled": ",".join(disabled), **extra}
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
