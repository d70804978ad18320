"""`gpushell-admin init`: prepare the host.  Every step is idempotent."""

from __future__ import annotations

import grp
import os
import tempfile
from collections.abc import Callable

from ..core import chaincheck, dropins, forward, isolation, kernelpools, registry, registry_edit
from ..core.errors import ExitStatus, GpushellError
from ..core.model import Registry
from ..core.paths import Paths
from ..system import hostnet, iptables, nftrun, pool, registry_store, sysctl
from ..system.accounts import covers_subid
from ..system.files import write_atomically
from ..system.runner import run

Report = Callable[[str], None]


def ensure_registry(paths: Paths, report: Report) -> None:
    if os.path.exists(paths.registry):
        return
    import socket  # for the host's name, once

    text = dropins.starter_registry(socket.getfqdn(), sysctl.host_memory(), os.cpu_count() or 1)
    if registry_store.create(paths, text):
        report(f"wrote a starter registry to {paths.registry}")


def ensure_forwards(reg: Registry, report: Report) -> None:
    table = iptables.read_nat()
    # Rebuilding a right chain would still move nf_tables' generation and so
    # send every student's next login through the full forward check.
    if not chaincheck.chain_matches(table, reg):
        iptables.apply(forward.rebuild_lines(table, reg, reg.users.values()))
    report(f"nat chain {reg.chain}: {len(reg.users)} forward(s)")


def ensure_isolation(reg: Registry, report: Report) -> None:
    nftrun.ensure(reg)  # only when they differ: a rebuild moves nf_tables' generation
    name = isolation.table_name(reg)
    report(f"nftables tables bridge {name} and inet {name}: isolation for {len(reg.users)} student(s)")


def ensure_kernel_pools(paths: Paths, report: Report) -> None:
    """The kernel pools every container draws from, sized for the host now and from each boot on."""
    os.makedirs(os.path.dirname(paths.sysctl_dropin), mode=0o755, exist_ok=True)
    ensure_file(paths.sysctl_dropin, kernelpools.dropin_text(sysctl.host_memory()), 0o644, report)
    sysctl.raise_pools(report)


def ensure_group(paths: Paths, report: Report) -> None:
    try:
        grp.getgrnam(paths.group)
    except KeyError:
        run(["groupadd", "--system", paths.group])
        report(f"created group {paths.group}")


def ensure_file(
    path: str, text: str, mode: int, report: Report, check: Callable[[str], object] | None = None
) -> None:
    try:
        with open(path, encoding="utf-8") as stream:
            if stream.read() == text:
                return
    except FileNotFoundError:
        pass
    if check is not None:  # validate a copy before it can take effect
        candidate = f"{path}.gpushell-new"
        write_atomically(candidate, text, mode)
        try:
            check(candidate)
        except BaseException:
            os.unlink(candidate)
            raise
        os.rename(candidate, path)  # the checked copy itself: what passed is what takes effect
    else:
        write_atomically(path, text, mode)
    report(f"installed {path}")


def check_sudoers(candidate: str) -> None:
    run(["visudo", "-cqf", candidate])


def check_sshd(candidate: str) -> None:
    """`sshd -t` on a configuration that holds only the candidate: sshd's own parser judges it."""
    with tempfile.NamedTemporaryFile("w", prefix="gpushell-sshd-", suffix=".conf") as config:
        config.write(f"Include {candidate}\n")
        config.flush()
        # sshd -t refuses without its privilege separation directory, which
        # ssh.service makes only when it starts: a host whose sshd is stopped.
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        run(["sshd", "-t", "-f", config.name])


PRIVSEP_DIR = "/run/sshd"


def ensure_dropins(paths: Paths, report: Report) -> None:
    """The sudoers and sshd drop-ins, each checked before it takes effect.

    init's last step, and all that `init --drop-ins` does: the Debian
    package runs that on every install and upgrade, since the sudoers
    drop-in lists the helper's verbs of this release.
    """
    ensure_file(paths.sudoers_dropin, dropins.sudoers(paths), 0o440, report, check=check_sudoers)
    os.makedirs(os.path.dirname(paths.sshd_dropin), mode=0o755, exist_ok=True)
    ensure_file(paths.sshd_dropin, dropins.sshd(paths), 0o644, report, check=check_sshd)


def ensure_subordinate_ids(reg: Registry, report: Report) -> None:
    """A root: line in /etc/subuid and /etc/subgid covering the students' ranges."""
    count = 2**32 - reg.idmap_start - 2  # everything above the start, short of -1
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
        except FileNotFoundError:
            lines = []
        if any(covers_subid(line, reg.idmap_start) for line in lines):
            continue
        lines.append(f"root:{reg.idmap_start}:{count}")
        write_atomically(path, "\n".join(lines) + "\n")
        report(f"added root:{reg.idmap_start}:{count} to {path}")


def ensure_login_shell_listed(paths: Paths, report: Report) -> None:
    with open("/etc/shells", encoding="utf-8") as stream:
        if paths.shell in stream.read().split():
            return
    with open("/etc/shells", "a", encoding="utf-8") as stream:
        stream.write(paths.shell + "\n")
    report(f"added {paths.shell} to /etc/shells")


class StorageRequest:
    """What `init --storage` asked for: the kind, and a loop-backed pool to make for it (or not)."""

    __slots__ = ("kind", "pool_file", "size")

    def __init__(self, kind: str, pool_file: str | None = None, size: int | None = None) -> None:
        self.kind, self.pool_file, self.size = kind, pool_file, size


def request_problem(request: StorageRequest, lxcpath: str) -> str | None:
    """Why the options of `init --storage` do not go together, or None (pure)."""
    if request.kind != "btrfs":
        if request.pool_file is not None or request.size is not None:
            return "--pool-file and --size make a btrfs pool: use them with --storage btrfs"
        return None
    if request.pool_file is None:
        return (
            "--size is the size of a new pool: give --pool-file PATH too"
            if request.size is not None
            else None
        )
    return pool.pool_problem(request.pool_file, lxcpath, request.size)


def storage_refusal(reg: Registry, request: StorageRequest) -> str | None:
    """Why the registry cannot take the storage asked for, or None (pure)."""
    if request.kind == reg.storage:
        if request.pool_file is not None and reg.pool_file and reg.pool_file != request.pool_file:
            return f"the registry already names the pool file {reg.pool_file}"
        return None
    if request.kind == "dir":
        return "the registry says storage: btrfs; there is no way back to dir storage"
    if reg.users:
        return (
            f"the registry has {len(reg.users)} student(s) on dir storage; move them to btrfs with: "
            "gpushell-admin storage migrate (the lxcpath must be on btrfs first)"
        )
    return None


NOT_BTRFS = (
    "{lxcpath} is on {kind}, not btrfs: mount a btrfs disk or partition there first "
    "(or, to try it, make a loop-backed pool: --pool-file PATH --size SIZE)"
)


def ensure_storage(paths: Paths, request: StorageRequest, report: Report) -> None:
    """The lxcpath on btrfs with quotas on (a new pool first, if asked), then the registry says so.

    The registry is changed last: it says `storage: btrfs` only once the
    filesystem is there.
    """
    reg = registry_store.load(paths)
    why = request_problem(request, reg.lxcpath) or storage_refusal(reg, request)
    if why is not None:
        raise GpushellError(why, status=ExitStatus.USAGE)
    if request.kind != "btrfs":
        return
    lxcpath, pool_file = reg.lxcpath, request.pool_file or reg.pool_file
    if pool_file and pool.pool_mounted(pool_file, lxcpath):
        pass
    elif request.pool_file is not None and request.size is not None and not os.path.exists(request.pool_file):
        pool.create(request.pool_file, request.size, lxcpath)
        size = registry.size_text(request.size)
        report(f"made a btrfs pool of {size} in {request.pool_file}, mounted at {lxcpath}")
    elif pool_file and pool_file == reg.pool_file:
        pool.mount(pool_file, lxcpath)
        report(f"mounted the pool {pool_file} at {lxcpath}")
    elif request.pool_file is not None:
        raise GpushellError(
            f"{request.pool_file} already exists; remove it or choose another --pool-file",
            status=ExitStatus.USAGE,
        )
    kind = pool.filesystem_type(lxcpath)
    if kind != pool.BTRFS:
        raise GpushellError(NOT_BTRFS.format(lxcpath=lxcpath, kind=kind), status=ExitStatus.USAGE)
    os.makedirs(lxcpath, mode=0o755, exist_ok=True)
    if pool.enable_quotas(lxcpath):
        report(f"turned on btrfs quotas for {lxcpath}")

    def edit(text: str, old: Registry) -> str:
        text = registry_edit.set_setting(text, "storage", "btrfs")
        if request.pool_file is not None:
            text = registry_edit.set_setting(text, "pool_file", request.pool_file)
        return text

    old, new = registry_store.update(paths, edit)
    if (old.storage, old.pool_file) != (new.storage, new.pool_file):
        report("registry: storage: btrfs" + (f", pool_file: {new.pool_file}" if new.pool_file else ""))


def init(paths: Paths, report: Report, storage: StorageRequest | None = None) -> Registry:
    ensure_registry(paths, report)
    if storage is not None:
        ensure_storage(paths, storage, report)
    reg = registry_store.load(paths)
    os.makedirs(paths.run_dir, mode=0o755, exist_ok=True)
    ensure_group(paths, report)
    # A cluster's front door holds no container: no bridge, isolation tables
    # or id ranges here; the members' engine has them (README: "Several servers").
    if reg.cluster is None:
        hostnet.ensure_bridge(reg, report)
    hostnet.ensure_ip_forwarding(report)
    ensure_forwards(reg, report)
    if reg.cluster is None:
        ensure_isolation(reg, report)
        ensure_subordinate_ids(reg, report)
        ensure_kernel_pools(paths, report)
    ensure_login_shell_listed(paths, report)
    ensure_dropins(paths, report)
    return reg
