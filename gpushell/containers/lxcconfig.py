"""LXC configuration and the files that give a clone its identity (pure)."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from ..core.allocate import host_interface, mac_address
from ..core.model import Limits, Registry, User
from ..core.paths import DRIVER_HOOK
from ..gpu.gpudevices import Node
from .cgroups import CGROUP_V1, CgroupLayout

COMMON_INCLUDES = (
    "/usr/share/lxc/config/common.conf",
    "/usr/share/lxc/config/userns.conf",
)


def hook_line(hook: str, root: str) -> str:
    """The config line that has LXC run the driver hook (driverhook.py) at each start.

    LXC runs it through `sh -c` with the container's name, `lxc` and
    `mount` appended; the registry allows no blanks in driver_root.
    """
    return f"lxc.hook.mount = {hook} {root}"


CPU_PERIOD_US = 100_000
# A container's CPU weight is an eighth of the host's own: of a host
# process's 1024 shares (v1), of a top-level slice's weight 100 (v2, where
# system.slice and user.slice compete as one group each).  Containers still
# share the CPUs evenly among themselves, and an idle host takes nothing from
# them; but when every container is busy, a login (sshd, the login shell, the
# helper) and the host's services go first: students' busy containers do not
# take the CPU another student's login needs.
CPU_SHARES = 1024 // 8
CPU_WEIGHT = 100 // 8


def limit_lines(limits: Limits, layout: CgroupLayout) -> list[str]:
    """The container's memory, CPU and pids limits and CPU weight, in the keys of the host's cgroup layout.

    Only that layout's keys: LXC refuses to start a container whose config
    names a controller file the host does not have.  Swap is capped at as
    much as memory (v1 counts memory and swap together in memsw).
    """
    quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
    if layout.version == 2:
        lines = [f"lxc.cgroup2.memory.max = {limits.memory}"]
        if layout.swap:
            lines.append(f"lxc.cgroup2.memory.swap.max = {limits.memory}")
        return [
            *lines,
            f"lxc.cgroup2.cpu.max = {quota} {CPU_PERIOD_US}",
            f"lxc.cgroup2.cpu.weight = {CPU_WEIGHT}",
            f"lxc.cgroup2.pids.max = {limits.pids}",
        ]
    lines = [f"lxc.cgroup.memory.limit_in_bytes = {limits.memory}"]
    if layout.swap:
        lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = {2 * limits.memory}")
    return [
        *lines,
        f"lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_US}",
        f"lxc.cgroup.cpu.cfs_quota_us = {quota}",
        f"lxc.cgroup.cpu.shares = {CPU_SHARES}",
        f"lxc.cgroup.pids.max = {limits.pids}",
    ]


STUDENT_ID = 1000  # the student's uid and gid inside their own container


def id_map_lines(kind: str, base: int, size: int, student_host_id: int | None) -> list[str]:
    """The container's id map; with student_host_id, the student's own id goes to that host id.

    Container id 1000 (the student) is then the student's host uid/gid, and
    the rest of the range stays the student's own: so on a bind-mounted NAS
    the files the student owns on the host are theirs inside, and what they
    write there is owned by their host account, as from any other machine.
    """
    if student_host_id is None:
        return [f"lxc.idmap = {kind} 0 {base} {size}"]
    after = STUDENT_ID + 1
    return [
        f"lxc.idmap = {kind} 0 {base} {STUDENT_ID}",
        f"lxc.idmap = {kind} {STUDENT_ID} {student_host_id} 1",
        f"lxc.idmap = {kind} {after} {base + after} {size - after}",
    ]


# LXC's own default device list (common.conf), which userns.conf empties
# for unprivileged containers: mknod of anything (the kernel refuses it in
# a user namespace anyway), the standard character devices, ptys and fuse.
BASE_DEVICE_RULES = (
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 5:1 rwm",
    "c 5:2 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 136:* rwm", "c 10:229 rwm",
)  # fmt: skip


def device_lines(gpu_nodes: Sequence[Node], dev_dir: str = "/dev") -> list[str]:
    """The devices cgroup (v1 and v2 keys: LXC uses the one the host has) and the GPU nodes.

    Everything not listed is denied, so a container can open exactly the
    GPUs assigned to it even if a node for another one shows up inside.
    """
    rules = [*BASE_DEVICE_RULES, *(node.rule() for node in gpu_nodes)]
    lines = []
    for key in ("lxc.cgroup.devices", "lxc.cgroup2.devices"):
        lines.append(f"{key}.deny = a")
        lines += [f"{key}.allow = {rule}" for rule in rules]
    source = dev_dir.rstrip("/")
    lines += [
        f"lxc.mount.entry = {source}/{node.name} dev/{node.name} none bind,optional,create=file 0 0"
        for node in gpu_nodes
    ]
    return lines


SECCOMP_FILE = "seccomp"  # in the container's directory, beside config and rootfs

# The rules of LXC's own /usr/share/lxc/config/common.seccomp, which
# common.conf names: LXC loads one profile per container, so gpushell's
# profile repeats them.
LXC_COMMON_RULES = (
    "kexec_load errno 1",
    "open_by_handle_at errno 1",
    "init_module errno 1",
    "finit_module errno 1",
    "delete_module errno 1",
)

# The btrfs ioctls that make a subvolume or a snapshot, with the numbers of
# <linux/btrfs.h>: _IOW(0x94, nr, struct btrfs_ioctl_vol_args[_v2]), both
# structs 4096 bytes.  No privilege is needed for them on btrfs, and a
# subvolume made inside a rootfs is in no quota group of gpushell's: what
# is written there would escape the container's disk limit.
SUBVOLUME_IOCTLS = (
    ("BTRFS_IOC_SNAP_CREATE", 0x50009401),
    ("BTRFS_IOC_SUBVOL_CREATE", 0x5000940E),
    ("BTRFS_IOC_SNAP_CREATE_V2", 0x50009417),
    ("BTRFS_IOC_SUBVOL_CREATE_V2", 0x50009418),
)
# The kernel takes an ioctl's cmd as a 32-bit unsigned int, but seccomp
# sees the whole 64-bit register: an equality test would let a caller
# through who sets high bits the kernel then drops.  So compare the low
# 32 bits only (LXC: `[index,value,SCMP_CMP_MASKED_EQ,mask]`).
IOCTL_CMD_MASK = 0xFFFFFFFF
EPERM = 1


def seccomp_profile() -> str:
    """The seccomp profile (LXC's version 2 syntax) of every student's container.

    LXC's common rules (force-umount, kernel modules, kexec,
    open_by_handle_at refused), and EPERM for the ioctls that make btrfs
    subvolumes, whatever the storage kind: a `dir` lab on a btrfs
    filesystem has the same hole.
    """
    lines = [
        "2",
        "denylist",
        "# Generated by gpushell; edits here are overwritten.",
        "reject_force_umount",
        "[all]",
        *LXC_COMMON_RULES,
    ]
    for name, number in SUBVOLUME_IOCTLS:
        lines.append(f"# {name}")
        lines.append(f"ioctl errno {EPERM} [1,{number:#x},SCMP_CMP_MASKED_EQ,{IOCTL_CMD_MASK:#x}]")
    return "\n".join(lines) + "\n"


def seccomp_path(rootfs: str) -> str:
    """Where a container's profile is: its directory, root's own, out of the container's reach."""
    return posixpath.join(posixpath.dirname(rootfs.rstrip("/")), SECCOMP_FILE)


def container_config(
    reg: Registry,
    user: User,
    rootfs: str,
    apparmor_profile: str = "generated",
    gpu_nodes: Sequence[Node] = (),
    student_ids: tuple[int, int] | None = None,
    cgroup: CgroupLayout = CGROUP_V1,
) -> str:
    """The container's LXC config: unprivileged, id-mapped rootfs, static IP, its GPUs, its limits.

    The rootfs on disk keeps the template's plain ids; `idmap=container`
    shows it to the container through the user's own id range, so every
    student gets a disjoint range without a chown of the whole tree.
    `gpu_nodes` are the nodes this user gets (gpudevices.select).
    When the registry's driver is `host` and the user gets a GPU, LXC runs
    the driver hook at each start, which binds the host driver's files of
    that moment read-only (driverhook.py): nothing here names a version.
    `student_ids` (the student's host uid and gid) map the student's own
    ids to the host account's when the user has mounts (id_map_lines).
    Mounts are plain bind mounts, not id-mapped ones: see the README.
    """
    uid, gid = student_ids if (student_ids and user.mounts) else (None, None)
    lines = [f"lxc.include = {path}" for path in COMMON_INCLUDES]
    lines += [
        f"lxc.uts.name = {user.container}",
        f"lxc.rootfs.path = dir:{rootfs}",
        "lxc.rootfs.options = idmap=container",
        *id_map_lines("u", user.idmap, reg.idmap_size, uid),
        *id_map_lines("g", user.idmap, reg.idmap_size, gid),
        f"lxc.apparmor.profile = {apparmor_profile}",
        # After common.conf's include: it replaces LXC's common.seccomp (seccomp_profile).
        f"lxc.seccomp.profile = {seccomp_path(rootfs)}",
        "lxc.net.0.type = veth",
        f"lxc.net.0.link = {reg.bridge}",
        "lxc.net.0.flags = up",
        f"lxc.net.0.veth.pair = {host_interface(user.address)}",
        f"lxc.net.0.hwaddr = {mac_address(user.address)}",
        f"lxc.net.0.ipv4.address = {user.address}/{reg.subnet.prefixlen}",
        f"lxc.net.0.ipv4.gateway = {reg.gateway}",
        f"lxc.start.auto = {int(user.autostart)}",
    ]
    lines += limit_lines(user.limits, cgroup)
    lines += device_lines(gpu_nodes, reg.gpu_devices)
    if reg.driver == "host" and gpu_nodes:
        lines.append(hook_line(DRIVER_HOOK, reg.driver_root))
    for mount in user.mounts:
        options = "bind,create=dir," + ("ro" if mount.readonly else "rw")
        lines.append(f"lxc.mount.entry = {mount.source} {mount.target.lstrip('/')} none {options} 0 0")
    return (
        "# Generated by gpushell from the registry; edits here are overwritten.\n" + "\n".join(lines) + "\n"
    )


def hosts_file(container: str) -> str:
    return f"127.0.0.1\tlocalhost\n127.0.1.1\t{container}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


# LXC configures eth0 (address, gateway) before init runs; ifupdown must
# leave it alone instead of asking a DHCP server for another address.
INTERFACES = "auto lo\niface lo inet loopback\n\niface eth0 inet manual\n"
