"""`gpushell-admin doctor`: check the host against the registry and say how to fix it.

`gather` reads the host into plain `Facts`; each check is a pure function
of the registry, the paths and the facts, returning `Finding`s (ok, what,
fix).  GPU checks belong to the GPU work and are not here.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Callable, Iterable

from ..containers import btrfs, cgroups, confinement, provision
from ..containers.factory import backend_for
from ..core import chaincheck, dropins, expiry, isolation, kernelpools, upgrade
from ..core.errors import GpushellError
from ..core.forward import JUMP_CHAINS, TAG, NatTable, comment_of, destination, jump_rule, user_rule
from ..core.model import User
from ..core.paths import Paths
from ..core.registry import Registry, size_text
from ..gpu import driverfiles, gpudevices
from ..system import hostnet, ifaddr, iptables, nftrun, pool, registry_store, signalpool, sshdcheck, sysctl
from ..system.ownership import check_owned_by_root
from . import apply, clusterdoctor, helpercheck, leftovers, lendingops
from .findings import Finding, finding

APPLY = "gpushell-admin apply"
INIT = "gpushell-admin init"


@dataclasses.dataclass(frozen=True)
class InstalledFile:
    text: str | None  # None: missing
    mode: int = 0
    uid: int = 0


@dataclasses.dataclass(frozen=True)
class StorageFacts:
    filesystem: str  # what the lxcpath is on: btrfs, ext4, ...
    free: int  # bytes still free for new data there
    size: int  # the filesystem's size in bytes
    pool_mounted: bool | None = None  # the registry's pool_file is what is mounted; None: no pool_file
    quotas: bool | None = None  # btrfs quotas on; None: not btrfs
    # container -> (bytes its rootfs uses, its quota or None); absent: its rootfs is no subvolume
    usage: dict[str, tuple[int, int | None]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Facts:
    bridge_exists: bool
    bridge_addresses: list[str]  # "10.0.3.1/24", ...
    bridge_mac_fixed: bool  # the bridge keeps a MAC of its own (hostnet.mac_fixed)
    forwarding_on: bool
    table: NatTable
    sudoers: InstalledFile
    sshd: InstalledFile
    subids: dict[str, list[str] | None]  # /etc/subuid and /etc/subgid lines; None: missing
    template_exists: bool
    configs: dict[str, str | None]  # container -> config text; None: no container directory
    listeners: dict[int, str]  # TCP port a host process listens on -> who
    accounts: dict[str, apply.Account | None]
    apparmor_profile: str = "generated"
    cgroup: cgroups.CgroupLayout = cgroups.CGROUP_V1
    gpu: gpudevices.GpuHost = gpudevices.NO_DRIVER
    student_ids: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    leftovers: tuple[leftovers.Leftover, ...] = ()  # of interrupted adds (leftovers.find)
    kept_accounts: tuple[str, ...] = ()  # in the group, no entry: kept by remove without --purge
    # container -> driver versions its own libraries carry (driver: container, GPU users only)
    driver_versions: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    sshd_effect: sshdcheck.SshdFacts | None = None  # None: not examined
    # nftrun.problems: what is wrong with the isolation tables; None: not examined
    isolation: tuple[str, ...] | None = None
    storage: StorageFacts | None = None  # None: not examined
    now: float | None = None  # when doctor looked (epoch seconds), for expiries; None: not examined
    cluster: clusterdoctor.ClusterFacts | None = None  # the members and their containers (backend lxd)
    pools: dict[str, int] | None = None  # the kernel pools every container shares, now; None: not examined
    # (the queued-signal pool a container started now gets, the pool wanted); None: not examined
    signal_pool: tuple[int, int] | None = None
    last_tick: float | None = None  # when gpushell-admin tick last finished since boot (epoch seconds)
    memory: int = 0  # the host's memory in bytes, which sizes those pools
    helper_server: helpercheck.ServerFacts | None = None  # the resident helper; None: none answers


# --- checks (pure) -----------------------------------------------------------


def check_bridge(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    address = f"{reg.gateway}/{reg.subnet.prefixlen}"
    if not facts.bridge_exists:
        return [Finding(False, f"bridge {reg.bridge} does not exist", INIT)]
    return [
        finding(
            address in facts.bridge_addresses,
            f"bridge {reg.bridge} has {address}",
            f"bridge {reg.bridge} lacks the gateway address {address}",
            INIT,
        ),
        finding(
            facts.bridge_mac_fixed,
            f"bridge {reg.bridge} keeps a MAC address of its own",
            f"bridge {reg.bridge} takes its MAC address from its ports: each container's start or stop "
            "may change it and cut the running containers off from the host for ~30 s",
            "gpushell-admin apply",
        ),
    ]


def check_forwarding(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    return [
        finding(
            facts.forwarding_on,
            "IPv4 forwarding is on",
            "IPv4 forwarding is off",
            f"{INIT} (or: sysctl -w net.ipv4.ip_forward=1)",
        )
    ]


def check_chain(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    found = [
        finding(
            reg.chain in facts.table.chains,
            f"nat chain {reg.chain} exists",
            f"nat chain {reg.chain} is missing",
            APPLY,
        )
    ]
    for parent in JUMP_CHAINS:
        found.append(
            finding(
                facts.table.has(jump_rule(parent, reg.chain)),
                f"{parent} jumps to {reg.chain}",
                f"no jump from {parent} to {reg.chain}",
                APPLY,
            )
        )
    return found


def check_forwards(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    rules = facts.table.rules_of(reg.chain)
    found = []
    for user in sorted(reg.users.values(), key=lambda u: u.port):
        wanted = user_rule(reg.chain, user, reg.cluster)
        tagged = [rule for rule in rules if comment_of(rule) == f"{TAG}{user.name}"]
        address, port = destination(user, reg.cluster)
        found.append(
            finding(
                tagged == [wanted],
                f"{user.name}: one forward, port {user.port} -> {address}:{port}",
                f"{user.name}: {len(tagged)} rule(s) tagged {TAG}{user.name}, "
                f"{tagged.count(wanted)} of them right (port {user.port} -> {address}:{port})",
                APPLY,
            )
        )
    problems = chaincheck.problems(facts.table, reg)
    strays = [problem.message for problem in problems if problem.kind in STRAY_KINDS]
    found.append(
        finding(
            not strays,
            f"no stray rules in {reg.chain}",
            f"{len(strays)} stray rule(s) in {reg.chain}: " + "; ".join(strays),
            APPLY,
        )
    )
    found += [
        Finding(False, problem.message, APPLY)
        for problem in problems
        if problem.kind == chaincheck.NO_MASQUERADE
    ]
    return found


# A rule gpushell did not make, or made for a student or member the registry no longer has.
STRAY_KINDS = (chaincheck.ORPHAN, chaincheck.UNTAGGED, chaincheck.STALE_MASQUERADE)


def check_isolation(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    if facts.isolation is None:
        return []
    if facts.isolation:
        return [Finding(False, problem, APPLY) for problem in facts.isolation]
    name = isolation.table_name(reg)
    return [Finding(True, f"nftables tables bridge {name} and inet {name} (isolation) match the registry")]


def check_signal_pool(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    if facts.signal_pool is None:
        return []
    pool, wanted = facts.signal_pool
    if pool >= wanted:
        return [
            Finding(True, f"each container gets a pool of {pool} queued signals, more than memory could fill")
        ]
    return [
        Finding(
            True,
            f"each container gets a pool of {pool} queued signals (root's RLIMIT_SIGPENDING), below "
            f"{wanted}: one container can queue them all and leave its neighbours none",
            f"give root CAP_SYS_RESOURCE (a stock host's root has it), or a hard RLIMIT_SIGPENDING of at "
            f"least {wanted} where gpushell starts containers",
            warning=True,
        )
    ]


def check_kernel_pools(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    if facts.pools is None:
        return []
    short = kernelpools.shortfalls(facts.pools, facts.memory)
    if short:
        return [
            Finding(
                False,
                f"{kernelpools.shortfall_text(key, *sizes)}: every container draws on this host-wide pool, "
                "and one container can take it all",
                APPLY,
            )
            for key, sizes in sorted(short.items())
        ]
    sizes = ", ".join(f"{key} {facts.pools[key]}" for key in sorted(facts.pools))
    return [Finding(True, f"the kernel pools every container shares are as large as the host needs: {sizes}")]


def _check_dropin(name: str, path: str, installed: InstalledFile, wanted: str, mode: int) -> Finding:
    if installed.text is None:
        return Finding(False, f"{name} drop-in {path} is missing", INIT)
    if installed.text != wanted:
        return Finding(False, f"{name} drop-in {path} differs from what gpushell installs", INIT)
    if installed.uid != 0 or installed.mode != mode:
        return Finding(
            False,
            f"{name} drop-in {path} has owner {installed.uid}, mode {installed.mode:04o}",
            f"chown root:root {path} && chmod {mode:04o} {path}",
        )
    return Finding(True, f"{name} drop-in {path} is installed")


def check_dropins(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    return [
        _check_dropin("sudoers", paths.sudoers_dropin, facts.sudoers, dropins.sudoers(paths), 0o440),
        _check_dropin("sshd", paths.sshd_dropin, facts.sshd, dropins.sshd(paths), 0o644),
    ]


# What sshd must apply to every student (`sshd -T` keyword, value): the
# drop-in's settings, and no ForceCommand (internal-sftp there would bypass
# the login shell as well).
SSHD_WANTED: tuple[tuple[str, str], ...] = (
    ("disableforwarding", "yes"),
    ("allowtcpforwarding", "no"),
    ("allowagentforwarding", "no"),
    ("allowstreamlocalforwarding", "no"),
    ("x11forwarding", "no"),
    ("permittunnel", "no"),
    ("permitopen", "none"),
    ("permitlisten", "none"),
    ("gatewayports", "no"),
    ("permituserrc", "no"),
    ("permituserenvironment", "no"),
    ("forcecommand", "none"),
)
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def _names(users: list[str]) -> str:
    return ", ".join(users) if len(users) <= 3 else f"{', '.join(users[:3])} and {len(users) - 3} more"


def _when(nanoseconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(nanoseconds // sshdcheck.SECOND))


def _reload(sshd: sshdcheck.SshdFacts) -> str:
    pids = " ".join(str(listener.pid) for listener in sshd.listeners)
    return f"reload sshd: kill -HUP {pids}" if pids else "start sshd"


def _override_fix(sshd: sshdcheck.SshdFacts, paths: Paths, where: list[str], include: str) -> str:
    if sshd.dropin_read is False:
        return include
    if where:
        return (
            f"take out the line that sets it at {', '.join(where)} (sshd keeps the first value "
            f"it reads, and a matching Match block overrides a global line), then {_reload(sshd)}"
        )
    return (
        f"make {paths.sshd_dropin} what gpushell installs ({INIT}) and include it before "
        f"any other setting in {sshd.config}, then {_reload(sshd)}"
    )


def check_sshd_settings(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    """What `sshd -T` says sshd applies to the students, from the files on disk."""
    sshd = facts.sshd_effect
    if sshd is None:
        return []
    config, dropin = sshd.config, paths.sshd_dropin
    if sshd.base.returncode != 0:
        return [
            Finding(
                False,
                f"sshd -T -f {config} fails: {sshdcheck.error_line(sshd.base)}",
                f"correct {config} or what it includes (a reload with it now would stop sshd)",
            )
        ]
    include = (
        f"add `Include {os.path.dirname(dropin)}/*.conf` as the first line of {config}, then {_reload(sshd)}"
    )
    found = []
    if sshd.dropin_read is not None:
        found.append(
            finding(
                sshd.dropin_read,
                f"sshd reads {dropin} through {config}",
                f"sshd never reads {dropin}: {config} does not include it",
                include,
            )
        )
    if not sshd.probes:
        found.append(
            Finding(
                True,
                f"no account in group {paths.group} yet: what sshd applies to students is not checked "
                "(sshd matches `Match Group` only for an existing account)",
            )
        )
        return found
    broken = [probe for probe in sshd.probes if probe.returncode != 0]
    if broken:
        found.append(
            Finding(
                False,
                f"sshd -T -f {config} -C user={broken[0].user} fails: {sshdcheck.error_line(broken[0])}",
                f"correct {config} or what it includes",
            )
        )
        return found
    wrong: list[Finding] = []
    for keyword, wanted in SSHD_WANTED:
        by_value: dict[str, list[sshdcheck.Probe]] = {}
        for probe in sshd.probes:
            got = sshdcheck.value(probe.dump, keyword)
            if got != wanted:
                by_value.setdefault("(not shown)" if got is None else got, []).append(probe)
        for got, probes in by_value.items():
            where = sshdcheck.origins(probes[0].debug, keyword, got, config)
            wrong.append(
                Finding(
                    False,
                    f"sshd would give {_names([str(p.user) for p in probes])} "
                    f"`{keyword} {got}`, not `{keyword} {wanted}`",
                    _override_fix(sshd, paths, where, include),
                )
            )
    internal: dict[str, list[sshdcheck.Probe]] = {}
    for probe in sshd.probes:
        for line in sshdcheck.settings(probe.dump).get("subsystem", []):
            if line.split()[1:2] == ["internal-sftp"]:
                internal.setdefault(line, []).append(probe)
    for line, probes in internal.items():
        name = line.split()[0]
        where = sshdcheck.origins(probes[0].debug, "subsystem", line, config)
        fixed = f"make it `Subsystem {name} {SFTP_SERVER}`"
        wrong.append(
            Finding(
                False,
                f"sshd would run subsystem {name} for {_names([str(p.user) for p in probes])} "
                "as internal-sftp, which bypasses the login shell",
                f"{fixed} at {', '.join(where)}, then {_reload(sshd)}"
                if where
                else f"{fixed} in {config}, then {_reload(sshd)}",
            )
        )
    users = _names([str(probe.user) for probe in sshd.probes])
    return found + (
        wrong
        or [
            Finding(
                True,
                f"sshd gives {users} (group {paths.group}): no forwarding of any kind, no ~/.ssh/rc, "
                "no client environment, no ForceCommand, no internal-sftp",
            )
        ]
    )


def check_sshd_running(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    """Has the running sshd read its configuration files since they last changed?"""
    sshd = facts.sshd_effect
    if sshd is None:
        return []
    if not sshd.listeners:
        start = "systemctl start ssh" if sshd.config == sshdcheck.DEFAULT_CONFIG else f"sshd -f {sshd.config}"
        return [Finding(False, f"no running sshd was started with {sshd.config}", f"start sshd: {start}")]
    if sshd.base.returncode != 0:
        return []  # which PidFile, which files: unknown while the configuration does not load
    changes = [(seconds, path) for path, seconds in sshd.changed.items() if seconds is not None]
    if not changes:
        return [
            Finding(True, f"sshd PID {listener.pid} runs with {sshd.config}") for listener in sshd.listeners
        ]
    last, path = max(changes)
    found = []
    for listener in sshd.listeners:
        pid = listener.pid
        if listener.loaded is not None:
            found.append(
                finding(
                    listener.loaded >= last,
                    f"sshd PID {pid} has read its configuration since {path} last changed",
                    f"sshd PID {pid} last read its configuration at {_when(listener.loaded)}, "
                    f"before {path} changed at {_when(last)}",
                    f"reload sshd: kill -HUP {pid}",
                )
            )
        elif listener.started > last + sshdcheck.SECOND:  # /proc's start time is good to a second
            found.append(Finding(True, f"sshd PID {pid} started after {path} last changed"))
        else:
            found.append(
                Finding(
                    False,
                    f"sshd PID {pid} started at {_when(listener.started)}, before {path} changed at "
                    f"{_when(last)}, and has no PidFile naming it that would show a reload",
                    "restart sshd (without a PidFile a reload leaves no trace to check)",
                )
            )
    return found


def covers(line: str, first: int, last: int) -> bool:
    """True when a subordinate id line `root:START:COUNT` covers ids first..last."""
    parts = line.strip().split(":")
    if len(parts) != 3 or parts[0] != "root" or not parts[1].isdigit() or not parts[2].isdigit():
        return False
    start, count = int(parts[1]), int(parts[2])
    return start <= first and last < start + count


def check_subids(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    last = max([user.idmap for user in reg.users.values()] + [reg.idmap_start]) + reg.idmap_size - 1
    found = []
    for path, lines in sorted(facts.subids.items()):
        ok = lines is not None and any(covers(line, reg.idmap_start, last) for line in lines)
        found.append(
            finding(
                ok,
                f"{path} gives root ids {reg.idmap_start}-{last}",
                f"{path} has no root: line covering ids {reg.idmap_start}-{last}",
                INIT,
            )
        )
    return found


def check_template(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    return [
        finding(
            facts.template_exists,
            f"template {reg.template} is built",
            f"template {reg.template} is missing from {reg.lxcpath}",
            "gpushell-admin template build",
        )
    ]


def check_containers(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    found = []
    for user in sorted(reg.users.values(), key=lambda u: u.port):
        current = facts.configs.get(user.container)
        if current is None:
            found.append(
                Finding(
                    False,
                    f"{user.name}: container {user.container} does not exist in {reg.lxcpath}",
                    f"gpushell-admin remove {user.name} && gpushell-admin add {user.name}",
                )
            )
            continue
        found.append(
            finding(
                current
                == apply.wanted_config(
                    reg,
                    user,
                    facts.apparmor_profile,
                    facts.gpu.nodes,
                    facts.student_ids.get(user.name),
                    facts.cgroup,
                ),
                f"{user.name}: container {user.container} config matches the registry",
                f"{user.name}: {apply.config_path(reg, user.container)} differs from the registry's",
                APPLY,
            )
        )
    return found


# Below this much free space (or this share of the filesystem) a lab is about to fill its disk.
LOW_SPACE, LOW_SHARE = 2 * 2**30, 0.05
# A student past this share of their quota is told about before they hit it.
QUOTA_NEAR = 0.9


def percent(part: int, whole: int) -> str:
    return f"{100 * part // whole}%" if whole else "?"


def check_storage(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    """The storage kind and its filesystem, btrfs quotas and each student's use, the free space."""
    found: list[Finding] = []
    storage = facts.storage
    if storage is None:
        return found
    where = reg.lxcpath
    if reg.pool_file:
        found.append(
            finding(
                bool(storage.pool_mounted),
                f"pool {reg.pool_file} is mounted at {where}",
                f"pool {reg.pool_file} is not mounted at {where}",
                f"{APPLY} (mounts it)",
            )
        )
    if reg.storage == "btrfs":
        found.extend(_btrfs_findings(reg, storage))
    else:
        migrate = (
            "gpushell-admin storage migrate"
            if storage.filesystem == "btrfs"
            else (f"put {where} on btrfs, then gpushell-admin storage migrate")
        )
        found.append(
            Finding(
                True,
                f"storage dir on {storage.filesystem}: no hard disk quota; one student can fill {where}",
                f"a quota per student needs btrfs storage: {migrate}",
                warning=True,
            )
        )
    grow = (
        f", or grow the pool: truncate -s +SIZE {reg.pool_file}, losetup -c on its loop device, "
        f"btrfs filesystem resize max {where}"
    )
    low = storage.free < min(LOW_SPACE, storage.size) or storage.free < LOW_SHARE * storage.size
    found.append(
        finding(
            not low,
            f"{where}: {size_text(storage.free)} free of {size_text(storage.size)}",
            f"{where}: only {size_text(storage.free)} free of {size_text(storage.size)}",
            "free space (old snapshots, removed students' archives)" + (grow if reg.pool_file else ""),
        )
    )
    return found


def _btrfs_findings(reg: Registry, storage: StorageFacts) -> list[Finding]:
    where = reg.lxcpath
    if storage.filesystem != "btrfs":
        return [
            Finding(
                False,
                f"the registry says storage: btrfs but {where} is on {storage.filesystem}",
                f"{APPLY} (mounts the pool)"
                if reg.pool_file
                else f"mount the lab's btrfs filesystem at {where}",
            )
        ]
    found = [
        Finding(True, f"storage btrfs: {where} is on btrfs"),
        finding(
            bool(storage.quotas),
            f"btrfs quotas are on for {where}",
            f"btrfs quotas are off for {where}: no student's disk is limited",
            f"btrfs quota enable {where}",
        ),
    ]
    if not storage.quotas:
        return found
    for user in sorted(reg.users.values(), key=lambda u: u.port):
        use = storage.usage.get(user.container)
        if use is None:
            found.append(
                Finding(
                    False,
                    f"{user.name}: container {user.container} is no btrfs subvolume yet",
                    f"gpushell-admin storage migrate {user.name}",
                )
            )
            continue
        used, limit = use
        if limit is None:
            found.append(
                Finding(
                    False,
                    f"{user.name}: no disk quota on container {user.container} ({size_text(used)} used)",
                    f"gpushell-admin set {user.name} disk={size_text(user.limits.disk)}",
                )
            )
            continue
        what = (
            f"{user.name}: {size_text(used)} of {size_text(limit)} disk quota used ({percent(used, limit)})"
        )
        found.append(
            finding(
                used < QUOTA_NEAR * limit,
                what,
                what,
                f"the student deletes files or snapshots, or: gpushell-admin set {user.name} disk=SIZE",
            )
        )
    return found


def check_ports(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    clashes = [
        Finding(
            False,
            f"{user.name}: port {user.port} is also a listening host service ({facts.listeners[user.port]})",
            f"move that service, or give {user.name} another port in {reg.path} and run {APPLY}",
        )
        for user in sorted(reg.users.values(), key=lambda u: u.port)
        if user.port in facts.listeners
    ]
    return clashes or [Finding(True, "no host service listens on a student's port")]


def check_accounts(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    found = []
    for name in sorted(reg.users):
        account = facts.accounts.get(name)
        if account is None:
            found.append(
                Finding(
                    False,
                    f"{name}: no host account",
                    f"useradd --create-home --shell {paths.shell} --groups {paths.group} {name}, "
                    f"then install the student's key in ~{name}/.ssh/authorized_keys",
                )
            )
        elif account.shell != paths.shell or not account.in_group:
            found.append(
                Finding(
                    False,
                    f"{name}: host account has shell {account.shell or '(none)'}"
                    + ("" if account.in_group else f" and is not in group {paths.group}"),
                    APPLY,
                )
            )
        else:
            found.append(Finding(True, f"{name}: host account with shell {paths.shell}"))
    return found


def check_gpu_nodes(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    """Nodes the loaded NVIDIA modules call for (/proc/devices) but that are missing or stale."""
    host = facts.gpu
    found = [
        Finding(
            False,
            f"{os.path.join(host.dev_dir, node.name)} is missing "
            f"(the driver offers c {node.major}:{node.minor})",
            f"{APPLY} (or: {gpudevices.mknod_command(host.dev_dir, node)})",
        )
        for node in gpudevices.missing(host)
    ]
    found += [
        Finding(
            False,
            f"{os.path.join(host.dev_dir, have.name)} is c {have.major}:{have.minor}, "
            f"the driver says c {want.major}:{want.minor}",
            f"rm {os.path.join(host.dev_dir, have.name)} && {APPLY}",
        )
        for have, want in gpudevices.wrong(host)
    ]
    if found or not gpudevices.expected(host):
        return found  # no NVIDIA driver loaded: nothing to say
    return [Finding(True, f"NVIDIA device nodes in {host.dev_dir} match the loaded driver")]


def gpu_users(reg: Registry) -> list[User]:
    return [user for user in reg.users.values() if user.gpus != "none"]


def check_drivers(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    """driver: container: each GPU container's libcuda/libnvidia-ml must be the host module's version."""
    host = facts.gpu.driver_version
    if reg.driver != "container" or host is None:
        return []
    found = []
    for user in gpu_users(reg):
        versions = facts.driver_versions.get(user.container, frozenset())
        problem = driverfiles.mismatch(host, versions)
        found.append(
            Finding(
                problem is None,
                f"{user.name}: container {user.container} "
                + (problem or f"has the host's NVIDIA driver {host}"),
                f"gpushell-admin driver sync {user.name} (NVIDIA's {host} installer with "
                f"--no-kernel-module inside the container), or set "
                f"`driver: host` in {reg.path} and run: {APPLY}",
            )
        )
    return found


def check_leftovers(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    found = [
        Finding(False, item.what, APPLY if item.action != leftovers.REPORT else item.fix)
        for item in facts.leftovers
    ]
    if not found:
        found.append(Finding(True, f"no leftovers of interrupted adds in {reg.lxcpath}"))
    if facts.kept_accounts:
        found.append(
            Finding(
                True,
                f"host accounts in group {paths.group} kept without a registry entry: "
                + ", ".join(facts.kept_accounts)
                + " (gpushell-admin add NAME registers one again)",
            )
        )
    return found


TICK_LATE = 5 * 60  # seconds without a tick (it runs each minute) before doctor says it stopped
TICK_FIX = "systemctl enable --now gpushell-tick.timer (without systemd: the cron line in gpushell-admin(8))"


def check_tick(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    """With lending on, the tick must run: it ends loans, returns idle GPUs and serves the line."""
    if reg.lending is None or facts.now is None:
        return []
    if facts.last_tick is None:
        late = "gpushell-admin tick has not run since boot"
    elif facts.now - facts.last_tick > TICK_LATE:
        late = f"gpushell-admin tick last ran {(facts.now - facts.last_tick) / 60:.0f} minutes ago"
    else:
        return [Finding(True, f"gpushell-admin tick ran {facts.now - facts.last_tick:.0f} s ago")]
    return [Finding(False, f"{late}: GPU loans do not end and the line is not served", TICK_FIX)]


def check_helper_server(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    return helpercheck.check(paths.helper_socket, facts.helper_server)


def check_expiries(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    """Students whose account expires within 14 days, and those expired (their grace over or not)."""
    if facts.now is None or not any(user.expires is not None for user in reg.users.values()):
        return []
    from . import expiring

    found = [
        Finding(
            True,
            f"{name}'s account expires on {expiry.day_text(day)} (in {left} day{'' if left == 1 else 's'})",
        )
        for name, day, left in expiring.upcoming(reg, facts.now)
    ]
    for item in expiring.plan(reg, facts.now):
        expired = f"{item.name}'s account expired on {expiry.day_text(item.expires)}"
        if item.due:
            removable = f"{expired} and its grace ended {expiring.when(item.removable)}"
            found.append(
                Finding(True, removable, "gpushell-admin expire [--archive DIR] removes it", warning=True)
            )
        else:
            found.append(
                Finding(
                    True,
                    f"{expired}; kept until {expiring.when(item.removable)} ({expiring.grace_text(reg)})",
                )
            )
    return found or [Finding(True, f"no student's account expires within {expiry.WARN_DAYS} days")]


Check = Callable[[Registry, Paths, Facts], list[Finding]]
CHECKS: tuple[Check, ...] = (
    check_bridge,
    check_forwarding,
    check_chain,
    check_forwards,
    check_isolation,
    check_kernel_pools,
    check_signal_pool,
    check_dropins,
    check_sshd_settings,
    check_sshd_running,
    check_helper_server,
    check_subids,
    check_template,
    check_storage,
    check_gpu_nodes,
    check_drivers,
    check_containers,
    check_ports,
    check_accounts,
    check_expiries,
    check_tick,
    check_leftovers,
)


def check_cluster(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    if facts.cluster is None:
        return []
    members = clusterdoctor.check_members(reg, facts.cluster)
    image = clusterdoctor.check_image(reg, facts.cluster)
    project = clusterdoctor.check_project(reg, facts.cluster.project, facts.cluster.engine)
    gpus = clusterdoctor.check_gpus(reg, facts.cluster)
    if facts.now is not None:
        gpus += clusterdoctor.check_reports(reg, facts.cluster, facts.now)
        gpus += clusterdoctor.check_drivers(reg, facts.cluster, facts.now)
    volumes = clusterdoctor.check_volumes(reg, facts.cluster)
    return members + gpus + image + project + clusterdoctor.check_containers(reg, facts.cluster) + volumes


# A cluster's front door holds no container, bridge or template: its
# checks are the forwards, the login's files and accounts, and the members.
CLUSTER_CHECKS: tuple[Check, ...] = (
    check_forwarding,
    check_chain,
    check_forwards,
    check_dropins,
    check_sshd_settings,
    check_sshd_running,
    check_helper_server,
    check_ports,
    check_accounts,
    check_expiries,
    check_tick,
    check_cluster,
)


def run_checks(reg: Registry, paths: Paths, facts: Facts) -> list[Finding]:
    checks = CHECKS if reg.cluster is None else CLUSTER_CHECKS
    return [item for check in checks for item in check(reg, paths, facts)]


def upgrade_findings(text: str, reg: Registry) -> list[Finding]:
    """What to write into a registry from an earlier release (upgrade.advice), as warnings."""
    split = (line.partition(upgrade.SEP) for line in upgrade.advice(text, reg))
    return [Finding(True, f"upgrade: {what}", fix, warning=True) for what, _, fix in split]


def all_ok(findings: Iterable[Finding]) -> bool:
    return all(item.ok for item in findings)


# --- reading the host ----------------------------------------------------------


def installed_file(path: str) -> InstalledFile:
    try:
        info = os.lstat(path)
        with open(path, encoding="utf-8", errors="replace") as stream:
            return InstalledFile(stream.read(), stat.S_IMODE(info.st_mode), info.st_uid)
    except OSError:
        return InstalledFile(None)


def read_lines(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read().splitlines()
    except OSError:
        return None


def listeners() -> dict[int, str]:
    import psutil

    found: dict[int, str] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        who = "unknown process"
        if conn.pid:
            try:
                who = f"{psutil.Process(conn.pid).name()}, pid {conn.pid}"
            except psutil.Error:
                who = f"pid {conn.pid}"
        found.setdefault(conn.laddr.port, who)
    return found


def sshd_users(accounts: dict[str, apply.Account | None], kept: Iterable[str]) -> list[str]:
    """Whom to ask sshd about: the students whose account is in the group, else one kept member."""
    students = [name for name, account in sorted(accounts.items()) if account and account.in_group]
    return students or list(kept)[:1]


def storage_facts(reg: Registry) -> StorageFacts:
    """The lxcpath's filesystem, free space, quotas and each student's use of their quota."""
    kind = pool.filesystem_type(reg.lxcpath)
    info = os.statvfs(pool.existing_part(reg.lxcpath))
    mounted = pool.pool_mounted(reg.pool_file, reg.lxcpath) if reg.pool_file else None
    quotas = pool.quotas_enabled(reg.lxcpath) if kind == pool.BTRFS else None
    usage: dict[str, tuple[int, int | None]] = {}
    if quotas:
        storage = btrfs.BtrfsStorage(reg.lxcpath)
        for user in reg.users.values():
            directory = provision.container_dir(reg, user.container)
            used = storage.disk_used(directory) if btrfs.is_subvolume(directory) else None
            if used is not None:
                usage[user.container] = (used, storage.quota_of(directory))
    return StorageFacts(
        kind, pool.free_bytes(reg.lxcpath), info.f_blocks * info.f_frsize, mounted, quotas, usage
    )


def gather_front_door(reg: Registry, paths: Paths) -> Facts:
    """A cluster's front door: what CLUSTER_CHECKS read, the members asked once each."""
    accounts = apply.host_accounts(reg.users, paths.group)
    return Facts(
        bridge_exists=False,
        bridge_addresses=[],
        bridge_mac_fixed=False,
        forwarding_on=apply.forwarding_on(),
        table=iptables.read_nat(),
        sudoers=installed_file(paths.sudoers_dropin),
        sshd=installed_file(paths.sshd_dropin),
        subids={},
        template_exists=False,
        configs={},
        listeners=listeners(),
        accounts=accounts,
        sshd_effect=sshdcheck.gather(paths.sshd_config, paths.sshd_dropin, sshd_users(accounts, ())),
        now=time.time(),
        cluster=clusterdoctor.gather(reg),
        last_tick=lendingops.last_tick(paths),
        helper_server=helpercheck.gather(paths.helper_socket),
    )


def gather(reg: Registry, paths: Paths) -> Facts:
    if reg.cluster is not None:
        return gather_front_door(reg, paths)
    scan = leftovers.scan(reg, paths)
    exists = os.path.exists(f"/sys/class/net/{reg.bridge}")
    accounts = apply.host_accounts(reg.users, paths.group)
    kept = tuple(leftovers.unregistered_members(reg, scan))
    return Facts(
        bridge_exists=exists,
        bridge_addresses=ifaddr.ipv4_addresses(reg.bridge),
        bridge_mac_fixed=hostnet.mac_fixed(reg.bridge),
        forwarding_on=apply.forwarding_on(),
        table=iptables.read_nat(),
        sudoers=installed_file(paths.sudoers_dropin),
        sshd=installed_file(paths.sshd_dropin),
        subids={path: read_lines(path) for path in ("/etc/subuid", "/etc/subgid")},
        template_exists=os.path.isdir(backend_for(reg).rootfs(reg.template)),
        configs=apply.container_configs(reg),
        listeners=listeners(),
        accounts=accounts,
        apparmor_profile=confinement.apparmor_profile(),
        cgroup=cgroups.layout(),
        gpu=gpudevices.read_host(reg.gpu_devices, reg.driver_root),
        student_ids=apply.host_ids(reg),
        leftovers=tuple(leftovers.find(reg, paths, scan)),
        kept_accounts=kept,
        driver_versions={
            user.container: driverfiles.read_container_versions(backend_for(reg).rootfs(user.container))
            for user in gpu_users(reg)
        }
        if reg.driver == "container"
        else {},
        sshd_effect=sshdcheck.gather(paths.sshd_config, paths.sshd_dropin, sshd_users(accounts, kept)),
        isolation=tuple(nftrun.problems(reg)),
        storage=storage_facts(reg),
        now=time.time(),
        pools=sysctl.read(kernelpools.BYTES_PER),
        # What a start gets, found the way a start finds it: by widening doctor's own limit.
        signal_pool=None if reg.cluster is not None else signalpool.widen(),
        memory=sysctl.host_memory(),
        last_tick=lendingops.last_tick(paths),
        helper_server=helpercheck.gather(paths.helper_socket),
    )


def examine(paths: Paths) -> list[Finding]:
    """Every finding for this host; stops after the registry if it cannot be used."""
    try:
        check_owned_by_root(paths.registry)
        safe = Finding(True, f"registry {paths.registry} is root's and safe")
    except GpushellError as exc:
        safe = Finding(
            False,
            exc.user_message,
            f"chown root:root {paths.registry} && chmod 0644 {paths.registry}"
            " (and make every directory above it root's, not writable by others)",
        )
    try:
        text, reg = registry_store.load_text_for_doctor(paths)
    except GpushellError as exc:
        first = exc.user_message.splitlines()[0] if exc.user_message else "cannot be read"
        return [safe, Finding(False, f"registry does not load: {first}", f"correct {paths.registry}")]
    return [safe, *run_checks(reg, paths, gather(reg, paths)), *upgrade_findings(text, reg)]
