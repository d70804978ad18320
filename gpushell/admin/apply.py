"""`gpushell-admin apply`: make the host match the registry, in one idempotent pass.

`observe` reads the host into a `HostState`; `plan` (pure) compares it with
the registry and returns the changes; `execute` makes them.  `--dry-run`
stops after `plan`.  A host that already matches gives an empty plan, so a
second apply has nothing to do.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from collections.abc import Callable, Iterable

from ..containers import cgroups, confinement, lxcconfig
from ..containers.backend import RUNNING, STOPPED, UNKNOWN, ContainerDriver
from ..containers.factory import backend_for
from ..core import chaincheck, expiry, forward, kernelpools
from ..core.errors import GpushellError
from ..core.forward import NatTable
from ..core.model import Registry, User
from ..core.paths import Paths
from ..core.value import Value
from ..gpu import gpudevices
from ..helper import services
from ..system import accounts, hostnet, ifaddr, iptables, nftrun, pool, sysctl
from ..system.files import read_text_or_none, write_atomically
from ..system.lock import ADMIN_WAIT, admin_busy, locked
from ..system.runner import run
from . import leftovers
from .leftovers import Leftover

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..containers.lxdinstance import Cards

Report = Callable[[str], None]

# Kinds of change, in the order they are made: the network first, so a
# container started at the end finds its bridge and its forward.
BRIDGE, FORWARDING, FORWARDS, CONFIG, ACCOUNT, START = (
    "bridge", "forwarding", "forwards", "config", "account", "start",
)  # fmt: skip
GPU_NODES = "gpu-nodes"  # before CONFIG: the configs bind the nodes it makes
ISOLATION = "isolation"  # the nftables tables (isolation.py); before START: no container runs unguarded
KERNEL_POOLS = "kernel-pools"  # the kernel pools every container shares (kernelpools.py); before START
LEFTOVER = "leftover"  # last: what an interrupted add left (leftovers.py)
# Reasons a chain rebuild names; after a reboot all of a lab's forwards are missing.
SHOWN_PROBLEMS = 3


class Account(Value):
    __slots__ = ("in_group", "shell")

    def __init__(self, shell: str, in_group: bool) -> None:
        self.shell, self.in_group = shell, in_group


class HostState(Value):
    __slots__ = ("accounts", "apparmor_profile", "bridge_ready", "cards", "cgroup", "configs",
                 "forwarding_on", "gpu", "isolation", "leftovers", "pools", "states", "student_ids",
                 "table", "unanswered")  # fmt: skip

    def __init__(
        self,
        table: NatTable,
        bridge_ready: bool,  # exists, has the gateway address and a MAC of its own (hostnet.mac_fixed)
        forwarding_on: bool,
        configs: dict[str, str | None],  # container -> its config text; None: no container
        accounts: dict[str, Account | None],  # user -> host account; None: no account
        states: dict[str, str],  # container -> RUNNING or STOPPED, for each container that exists
        apparmor_profile: str = "generated",
        gpu: gpudevices.GpuHost = gpudevices.NO_DRIVER,
        # user -> host uid and gid, for users with mounts (lxcconfig.id_map_lines)
        student_ids: dict[str, tuple[int, int]] | None = None,
        leftovers: tuple[Leftover, ...] = (),
        cgroup: cgroups.CgroupLayout = cgroups.CGROUP_V1,
        # what is wrong with the isolation tables (nftrun.problems); empty: they match
        isolation: tuple[str, ...] = (),
        # a cluster's containers whose member did not answer the engine -> that member: not checked
        unanswered: dict[str, str] | None = None,
        # the kernel pools smaller than the host needs: key -> (now, wanted) (kernelpools.shortfalls)
        pools: dict[str, tuple[int, int]] | None = None,
        # a cluster's members with GPU students -> their GPUs (lxdinstance.gpu_cards); absent: not read
        cards: dict[str, Cards] | None = None,
    ) -> None:
        self.table, self.cgroup = table, cgroup
        self.cards = {} if cards is None else cards
        self.pools = {} if pools is None else pools
        self.unanswered = {} if unanswered is None else unanswered
        self.isolation = isolation
        self.bridge_ready, self.forwarding_on = bridge_ready, forwarding_on
        self.configs, self.accounts, self.states = configs, accounts, states
        self.apparmor_profile, self.gpu, self.leftovers = apparmor_profile, gpu, leftovers
        self.student_ids = {} if student_ids is None else student_ids


class Change(Value):
    __slots__ = ("config", "kind", "leftover", "subject", "table", "text")

    def __init__(
        self,
        kind: str,
        subject: str,
        text: str,
        config: str = "",
        leftover: Leftover | None = None,
        table: NatTable | None = None,
    ) -> None:
        self.kind = kind
        self.subject = subject  # the user, container, chain or bridge it is about
        self.text = text  # what it does, for the administrator
        self.config = config  # CONFIG: the new config text
        self.leftover = leftover  # LEFTOVER: what to undo
        self.table = table  # FORWARDS: the nat table as observed, reused while still current


class Plan(Value):
    __slots__ = ("changes", "warnings")

    def __init__(self, changes: list[Change], warnings: list[str]) -> None:
        self.changes, self.warnings = changes, warnings


# --- pure ------------------------------------------------------------------


def config_path(reg: Registry, container: str) -> str:
    return backend_for(reg).config_path(container)


def config_name(reg: Registry, container: str) -> str:
    """What apply calls a container's config: its file, or on a cluster the engine's instance."""
    if reg.cluster is not None:
        return f"the config and devices of instance {container}"
    return config_path(reg, container)


def wanted_config(
    reg: Registry,
    user: User,
    apparmor_profile: str,
    gpu_nodes: tuple[gpudevices.Node, ...] = (),
    student_ids: tuple[int, int] | None = None,
    cgroup: cgroups.CgroupLayout = cgroups.CGROUP_V1,
    cards: Cards | None = None,
) -> str:
    """The config for user; gpu_nodes: every NVIDIA node on the host (the user's are picked here).

    On a cluster: the engine's config and devices the registry decides
    (lxdinstance.wanted), the GPUs by the addresses in cards, the user's
    member's GPUs; a GpushellError when it does not list one of the user's.
    """
    if reg.cluster is not None:
        from ..containers import lxdinstance

        return lxdinstance.wanted(reg, user, cards or {})
    rootfs = backend_for(reg).rootfs(user.container)
    nodes = gpudevices.select(gpu_nodes, user.gpus)
    return lxcconfig.container_config(reg, user, rootfs, apparmor_profile, nodes, student_ids, cgroup)


def plan(reg: Registry, paths: Paths, state: HostState) -> Plan:
    changes: list[Change] = []
    warnings: list[str] = []
    if not state.bridge_ready:
        address = f"{reg.gateway}/{reg.subnet.prefixlen}"
        what = f"set up bridge {reg.bridge} with {address} and a fixed MAC address"
        changes.append(Change(BRIDGE, reg.bridge, what))
    if not state.forwarding_on:
        changes.append(Change(FORWARDING, "ipv4", "turn on IPv4 forwarding"))
    found = chaincheck.problems(state.table, reg)
    if found:
        why = "; ".join(problem.message for problem in found[:SHOWN_PROBLEMS])
        if len(found) > SHOWN_PROBLEMS:
            why += f"; {len(found) - SHOWN_PROBLEMS} more (gpushell-admin doctor lists each)"
        text = f"rebuild nat chain {reg.chain} ({len(reg.users)} forwards): {why}"
        changes.append(Change(FORWARDS, reg.chain, text, table=state.table))
    if state.isolation:
        why = "; ".join(state.isolation)
        changes.append(Change(ISOLATION, reg.chain.lower(), f"rebuild the nftables isolation tables: {why}"))
    if state.pools:
        why = "; ".join(kernelpools.shortfall_text(key, *sizes) for key, sizes in sorted(state.pools.items()))
        text = f"raise the kernel pools every container shares: {why}"
        changes.append(Change(KERNEL_POOLS, "sysctl", text))
    missing_nodes = gpudevices.missing(state.gpu)
    if missing_nodes:
        names = ", ".join(f"{state.gpu.dev_dir.rstrip('/')}/{node.name}" for node in missing_nodes)
        changes.append(Change(GPU_NODES, state.gpu.dev_dir, f"create missing NVIDIA device nodes {names}"))
    users = sorted(reg.users.values(), key=lambda user: user.port)
    silent: dict[str, list[str]] = {}
    for container, member in state.unanswered.items():
        silent.setdefault(member, []).append(container)
    warnings += [
        f"member {member} is not answering: {', '.join(sorted(names))} not checked (gpushell-admin doctor)"
        for member, names in sorted(silent.items())
    ]
    for user in users:
        if user.container in state.unanswered:
            continue
        current = state.configs.get(user.container)
        if current is None:
            warnings.append(
                f"{user.name}: container {user.container} does not exist; "
                f"recreate it with: gpushell-admin remove {user.name} && gpushell-admin add {user.name}"
            )
            continue
        try:
            config = wanted_config(
                reg,
                user,
                state.apparmor_profile,
                gpudevices.after_repair(state.gpu),
                state.student_ids.get(user.name),
                state.cgroup,
                state.cards.get(user.member),
            )
        except GpushellError as exc:
            warnings.append(f"{user.name}: container {user.container} not checked: {exc.log_message}")
            continue
        if current != config:
            running = state.states.get(user.container) == RUNNING
            # The engine applies a cluster container's new limits and devices at once.
            note = " (takes effect at its next start)" if running and reg.cluster is None else ""
            changes.append(
                Change(
                    CONFIG,
                    user.container,
                    f"regenerate {config_name(reg, user.container)} from the registry{note}",
                    config,
                )
            )
    for user in users:
        account = state.accounts.get(user.name)
        if account is None:
            warnings.append(f"{user.name}: no host account; gpushell-admin add {user.name} makes one")
            continue
        fixes = []
        if account.shell != paths.shell:
            fixes.append(f"login shell {account.shell or '(none)'} -> {paths.shell}")
        if not account.in_group:
            fixes.append(f"add to group {paths.group}")
        if fixes:
            changes.append(Change(ACCOUNT, user.name, f"fix account {user.name}: " + ", ".join(fixes)))
    today = expiry.today()
    for user in users:
        if (
            user.autostart
            and not expiry.is_expired(user.expires, today)  # an expired account's container stays stopped
            and state.configs.get(user.container) is not None
            and user.container not in state.unanswered
            and state.states.get(user.container) != RUNNING
        ):
            changes.append(Change(START, user.name, f"start container {user.container} (autostart)"))
    for item in state.leftovers:
        if item.action == leftovers.REPORT:
            warnings.append(f"{item.what}; {item.fix}")
        else:
            changes.append(Change(LEFTOVER, item.subject, f"remove leftover: {item.what}", leftover=item))
    return Plan(changes, warnings)


def unmounted_pool(reg: Registry) -> str | None:
    """The registry's pool file when it is not what is mounted at the lxcpath (after a reboot); else None.

    Looked at before anything else: until the pool is back, the lxcpath is
    an empty directory and every container looks missing.
    """
    if not reg.pool_file or pool.pool_mounted(reg.pool_file, reg.lxcpath):
        return None
    return reg.pool_file


def mount_pool_text(reg: Registry) -> str:
    return f"mount the pool {reg.pool_file} at {reg.lxcpath}"


def mount_pool(reg: Registry, report: Report) -> None:
    """Mount the registry's pool file at the lxcpath if it is not (losetup and mount, by mount -o loop)."""
    if unmounted_pool(reg) is not None:
        pool.mount(reg.pool_file, reg.lxcpath)
        report(f"done: {mount_pool_text(reg)}")


NOTHING_TO_DO = "nothing to do: the host matches the registry"


def render_dry_run(result: Plan) -> list[str]:
    """What apply --dry-run prints: each change it would make, then a summary."""
    if not result.changes:
        return [NOTHING_TO_DO]
    return [f"would {change.text}" for change in result.changes] + [
        f"dry run: {len(result.changes)} change(s) planned, nothing changed"
    ]


# --- reading the host ----------------------------------------------------------


def bridge_ready(reg: Registry) -> bool:
    has_gateway = f"{reg.gateway}/{reg.subnet.prefixlen}" in ifaddr.ipv4_addresses(reg.bridge)
    return has_gateway and hostnet.mac_fixed(reg.bridge)


def forwarding_on() -> bool:
    return sysctl.read([sysctl.IP_FORWARD]).get(sysctl.IP_FORWARD) == 1


NSSWITCH = "/etc/nsswitch.conf"
# Sources whose accounts getpwall() lists in full; LDAP or SSSD may not.
ENUMERATED_SOURCES = frozenset({"files", "compat", "systemd"})


def enumerates_every_account(nsswitch: str) -> bool:
    """Whether the `passwd:` sources all list every account they know (pure)."""
    for line in nsswitch.splitlines():
        database, colon, sources = line.partition("#")[0].partition(":")
        if colon and database.strip() == "passwd":
            words = [word for word in sources.split() if not word.startswith("[")]
            return bool(words) and set(words) <= ENUMERATED_SOURCES
    return False


def host_accounts(names: Iterable[str], group: str) -> dict[str, Account | None]:
    """Each name's login shell and group membership; None where there is no account.

    One pass over the account database, not one lookup per student: with
    a thousand students, getpwnam() each time cost ~0.1 s.  Where a
    directory service may hold accounts it does not enumerate, a name the
    pass did not list is still looked up alone.
    """
    complete = enumerates_every_account(read_text_or_none(NSSWITCH) or "")
    shells = {entry.pw_name: entry.pw_shell for entry in pwd.getpwall()}
    try:
        members = set(grp.getgrnam(group).gr_mem)
    except KeyError:
        members = set()
    accounts: dict[str, Account | None] = {}
    for name in names:
        shell = shells.get(name)
        if shell is None and not complete:
            with contextlib.suppress(KeyError):
                shell = pwd.getpwnam(name).pw_shell
        accounts[name] = None if shell is None else Account(shell, name in members)
    return accounts


def container_configs(reg: Registry) -> dict[str, str | None]:
    """Each student's container config text; None where there is no container.

    The config and the seccomp profile beside it are one: where the profile
    is missing or not gpushell's current one, the config counts as "" too.
    """
    configs: dict[str, str | None] = {}
    profile = lxcconfig.seccomp_profile()
    for user in reg.users.values():
        directory = backend_for(reg).directory(user.container)
        if os.path.isdir(directory):
            # A container without a config is broken: "" makes apply write one.
            text = read_text_or_none(config_path(reg, user.container)) or ""
            if read_text_or_none(os.path.join(directory, lxcconfig.SECCOMP_FILE)) != profile:
                text = ""
            configs[user.container] = text
        else:
            configs[user.container] = None
    return configs


def host_ids(reg: Registry) -> dict[str, tuple[int, int]]:
    """Host uid and gid of each user with mounts and a host account."""
    found = {}
    for user in reg.users.values():
        if user.mounts:
            try:
                entry = pwd.getpwnam(user.name)
            except KeyError:
                continue
            found[user.name] = (entry.pw_uid, entry.pw_gid)
    return found


def container_state(driver: ContainerDriver, name: str) -> str:
    """The LXC state; UNKNOWN when LXC cannot even load the config (apply rewrites it)."""
    try:
        return driver.state(name)
    except (RuntimeError, GpushellError):
        return UNKNOWN


def container_states(driver: ContainerDriver, configs: dict[str, str | None]) -> dict[str, str]:
    """RUNNING or STOPPED for each container that exists (configs from container_configs).

    One lxc-ls for all: an lxc-info per container cost a thousand-student
    lab about 1.5 s.  plan() asks only whether a container runs.
    """
    existing = [name for name, text in configs.items() if text is not None]
    running = driver.running() if existing else set()
    return {name: RUNNING if name in running else STOPPED for name in existing}


def observe(reg: Registry, paths: Paths) -> HostState:
    """The host as it is."""
    if reg.cluster is not None:
        return observe_front_door(reg, paths)
    configs = container_configs(reg)
    return HostState(
        table=iptables.read_nat(),
        bridge_ready=bridge_ready(reg),
        forwarding_on=forwarding_on(),
        configs=configs,
        accounts=host_accounts(reg.users, paths.group),
        states=container_states(backend_for(reg), configs),
        apparmor_profile=confinement.apparmor_profile(),
        gpu=gpudevices.read_host(reg.gpu_devices, reg.driver_root),
        student_ids=host_ids(reg),
        leftovers=tuple(leftovers.find(reg, paths, leftovers.scan(reg, paths))),
        cgroup=cgroups.layout(),
        isolation=tuple(nftrun.problems(reg)),
        pools=sysctl.pool_shortfalls(),
    )


def observe_front_door(reg: Registry, paths: Paths) -> HostState:
    """A cluster's front door: its forwards and accounts, and each container as the engine has it.

    It has no bridge, isolation tables or GPU nodes of its own to look at.
    """
    from ..containers.lxd import LxdDriver

    driver = backend_for(reg)
    assert isinstance(driver, LxdDriver)
    listed = driver.listing()  # one request for the configs and the states
    found = driver.managed_texts(listed)
    where = driver.states(listed)
    silent = {member for state, member in where.values() if state == UNKNOWN}
    cards = {}
    for member in sorted({user.member for user in reg.users.values() if user.gpus != "none"} - silent):
        with contextlib.suppress(GpushellError):  # unread: plan says its GPU students were not checked
            cards[member] = driver.member_gpus(member)
    return HostState(
        table=iptables.read_nat(),
        bridge_ready=True,
        forwarding_on=forwarding_on(),
        configs={user.container: found.get(user.container) for user in reg.users.values()},
        accounts=host_accounts(reg.users, paths.group),
        states={name: state for name, (state, _) in where.items()},
        unanswered={name: member for name, (state, member) in where.items() if state == UNKNOWN},
        cards=cards,
    )


# --- changing the host -----------------------------------------------------------


def _quiet(_: str) -> None:
    pass


def execute_change(change: Change, reg: Registry, paths: Paths) -> None:
    if change.kind == BRIDGE:
        hostnet.ensure_bridge(reg, _quiet)
    elif change.kind == FORWARDING:
        hostnet.ensure_ip_forwarding(_quiet)
    elif change.kind == FORWARDS:
        # The whole chain in one iptables-restore, under the forward lock (no
        # login's fix of its own forward interleaves); the jumps into the chain stay.
        with locked(paths.forward_lock):
            table = iptables.read_nat() if change.table is None else iptables.still_current(change.table)
            iptables.apply(forward.rebuild_lines(table, reg, reg.users.values()))
    elif change.kind == ISOLATION:
        nftrun.apply(reg)  # both tables in one nft transaction
    elif change.kind == KERNEL_POOLS:
        sysctl.raise_pools(_quiet)  # from a fresh look: raises only what is still short
    elif change.kind == GPU_NODES:
        # From a fresh look: make only what is still missing.
        host = gpudevices.read_host(change.subject)
        for node in gpudevices.missing(host):
            gpudevices.make_node(host.dev_dir, node)
    elif change.kind == CONFIG and reg.cluster is not None:
        from ..containers.lxd import LxdDriver

        driver = backend_for(reg)
        assert isinstance(driver, LxdDriver)
        driver.reconfigure(next(user for user in reg.users.values() if user.container == change.subject))
    elif change.kind == CONFIG:
        for user in reg.users.values():
            if user.container == change.subject:
                accounts.student_ids(user)  # root's subordinate ids for the student's own
        # The profile first: the config names it, and LXC refuses to start without it.
        confinement.write_seccomp_profile(backend_for(reg).directory(change.subject))
        write_atomically(config_path(reg, change.subject), change.config, 0o644)
    elif change.kind == ACCOUNT:
        run(["usermod", "--shell", paths.shell, "--append", "--groups", paths.group, change.subject])
    elif change.kind == START:
        user = reg.users[change.subject]
        ctx = services.Context(paths, reg, backend_for(reg))
        with locked(paths.user_lock(user.name), ADMIN_WAIT, admin_busy(user.name)):
            services.ensure_running(ctx, user)
    elif change.kind == LEFTOVER and change.leftover is not None:
        leftovers.remove(change.leftover, reg, paths)
    else:  # pragma: no cover - plan makes only the kinds above
        raise AssertionError(change.kind)


def execute(result: Plan, reg: Registry, paths: Paths, report: Report, fail: Report) -> int:
    """Make every change, going on past a failed one; return how many failed."""
    failures = 0
    for change in result.changes:
        try:
            execute_change(change, reg, paths)
        except GpushellError as exc:
            failures += 1
            fail(f"failed to {change.text}: {exc.user_message}")
            continue
        report(f"done: {change.text}")
    return failures


# --- GPU loans, after the containers started ----------------------------------------


def restore_loans(reg: Registry, paths: Paths, report: Report, fail: Report) -> int:
    """Drop the loans that ended (while the host was down) and put lent GPUs back into running containers.

    A container started by gpushell gets its loans at its start; this puts
    them back into those started otherwise.  Nothing to import or do for a
    lab that lends no GPUs.  Returns how many devices could not be moved.
    """
    if reg.lending is None:
        return 0
    from . import lendingops

    try:
        return lendingops.restore(paths, reg, report, fail)
    except GpushellError as exc:
        fail(f"failed to restore the GPU loans: {exc.user_message}")
        return 1


def loans_dry_run(reg: Registry, paths: Paths) -> list[str]:
    """What restore_loans would drop."""
    if reg.lending is None:
        return []
    from . import lendingops

    return lendingops.expired_text(paths)
