"""btrfs storage on a real btrfs filesystem: subvolumes, snapshots, the disk quota.

A lab of its own (`storage: btrfs`, a 1G disk limit) whose lxcpath is a
loop-backed btrfs pool made and removed by btrfs_pool.  Each student's
container must be a snapshot of the template, a snapshot of a running
container a read-only snapshot holding the container's files only, and
a write past the quota must fail inside the container while the host's
filesystem stays as it was.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .btrfs_pool import btrfs_pool
from .lab import Lab, Student, sh

QUOTA = 1024**3  # the lab's `limits: disk: 1G`


class BtrfsLab(Lab):
    """A lab whose registry says `storage: btrfs` and whose lxcpath is a btrfs pool."""

    def registry_text(self, idle_timeout: int = 600) -> str:
        text = super().registry_text(idle_timeout)
        return text.replace("users:\n", "storage: btrfs\nlimits:\n  disk: 1G\nusers:\n")


@pytest.fixture(scope="module")
def blab() -> Iterator[BtrfsLab]:
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root (they make filesystems, containers and users)")
    instance = BtrfsLab()
    with btrfs_pool(instance.lxcpath) as image:
        instance.pool_image = image  # type: ignore[attr-defined]
        try:
            instance.create()
            yield instance
        finally:
            instance.destroy()


@pytest.fixture
def bstudent(blab: BtrfsLab) -> Iterator[Student]:
    made = blab.add_student(f"b{len(blab.students)}")
    try:
        yield made
    finally:
        blab.admin("remove", made.name, "--purge", check=False)


def attach(lab: Lab, student: Student, script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return sh(
        ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--clear-env", "--",
         "/bin/sh", "-c", script],
        check=False, timeout=timeout,
    )  # fmt: skip


def started(lab: Lab, student: Student) -> None:
    result = lab.ssh(student, "start")
    assert result.returncode == 0, result.stderr
    assert lab.state(student) == "RUNNING"


def subvolume_show(path: Path) -> dict[str, str]:
    """`btrfs subvolume show`'s `Key: value` lines (path must be a subvolume)."""
    out = sh(["btrfs", "subvolume", "show", str(path)]).stdout
    fields = {}
    for line in out.splitlines()[1:]:
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def subvolume_paths(lab: Lab) -> list[str]:
    out = sh(["btrfs", "subvolume", "list", lab.lxcpath]).stdout
    return [line.split(" path ", 1)[1] for line in out.splitlines() if " path " in line]


def exclusive_of(lab: Lab, group: str) -> int:
    sh(["btrfs", "filesystem", "sync", lab.lxcpath])
    out = sh(["btrfs", "qgroup", "show", "-re", "--raw", lab.lxcpath]).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isdigit()}
    return int(rows[group][2])


def group_of(lab: Lab, student: Student) -> str:
    directory = Path(lab.lxcpath) / student.container
    return "1/" + sh(["btrfs", "inspect-internal", "rootid", str(directory)]).stdout.strip()


def test_a_new_container_is_a_snapshot_of_the_template_and_costs_nothing(
    blab: BtrfsLab, bstudent: Student
) -> None:
    template = subvolume_show(Path(blab.lxcpath) / blab.template / "rootfs")
    mine = subvolume_show(Path(blab.lxcpath) / bstudent.container / "rootfs")
    assert mine["Parent UUID"] == template["UUID"]
    assert "readonly" not in mine.get("Flags", "")
    assert exclusive_of(blab, group_of(blab, bstudent)) <= 5 * 2**20
    out = sh(["btrfs", "qgroup", "show", "-re", "--raw", blab.lxcpath]).stdout
    limit = next(
        line.split()[4] for line in out.splitlines() if line.startswith(group_of(blab, bstudent) + " ")
    )
    assert int(limit) == QUOTA
    status = blab.ssh(bstudent, "status")
    assert status.returncode == 0, status.stderr
    assert "of 1 GiB" in status.stdout, status.stdout


def test_snapshot_restore_rebuild_remove_with_subvolumes(blab: BtrfsLab, bstudent: Student) -> None:
    started(blab, bstudent)
    home = f"/home/{bstudent.name}"
    assert attach(blab, bstudent, f"echo before > {home}/state.txt && sync").returncode == 0
    init = blab.init_pid(bstudent)
    result = blab.ssh(bstudent, "snapshot", "first", timeout=600)
    assert result.returncode == 0, result.stderr
    assert blab.state(bstudent) == "RUNNING" and blab.init_pid(bstudent) == init
    snapshot = Path(blab.lxcpath) / bstudent.container / "gpushell-snapshots" / "first" / "rootfs"
    shown = subvolume_show(snapshot)
    assert "readonly" in shown["Flags"]
    assert (snapshot / home.lstrip("/") / "state.txt").read_text() == "before\n"
    listed = blab.ssh(bstudent, "snapshots")
    assert "first" in listed.stdout and "kept by them alone" in listed.stdout, listed.stdout

    assert attach(blab, bstudent, f"echo after > {home}/state.txt && touch {home}/made-after").returncode == 0
    result = blab.ssh(bstudent, "restore", "first", "--yes", timeout=600)
    assert result.returncode == 0, result.stderr
    back = attach(blab, bstudent, f"cat {home}/state.txt; test -e {home}/made-after && echo still-there")
    assert back.stdout == "before\n", back.stdout
    directory = Path(blab.lxcpath) / bstudent.container
    assert subvolume_show(directory / "rootfs")["Parent UUID"] == shown["UUID"]
    assert not {"rootfs.new", "rootfs.old"} & set(os.listdir(directory))

    result = blab.ssh(bstudent, "rebuild", "--yes", timeout=600)
    assert result.returncode == 0, result.stderr
    template = subvolume_show(Path(blab.lxcpath) / blab.template / "rootfs")
    assert subvolume_show(directory / "rootfs")["Parent UUID"] == template["UUID"]
    started(blab, bstudent)
    kept = attach(blab, bstudent, f"cat {home}/state.txt")
    assert kept.stdout == "before\n", kept.stdout  # rebuild keeps the home
    # Still in the container's quota group after the swaps.
    assert "of 1 GiB" in blab.ssh(bstudent, "status").stdout

    # A subvolume inside the rootfs, as a container root able to make one would leave it
    # (the template has no btrfs tool, so the host makes it in the same place).
    nested = directory / "rootfs" / "home" / bstudent.name / "planted"
    sh(["btrfs", "subvolume", "create", str(nested)])
    sh(["btrfs", "subvolume", "create", str(nested / "deeper")])
    (nested / "deeper" / "f").write_text("x")
    blab.admin("remove", bstudent.name, "--purge")
    assert not directory.exists()
    assert not [path for path in subvolume_paths(blab) if bstudent.container in path]


def test_a_write_past_the_quota_fails_inside_and_spares_the_host(blab: BtrfsLab, bstudent: Student) -> None:
    started(blab, bstudent)
    image = blab.pool_image  # type: ignore[attr-defined]
    host_free = os.statvfs(os.path.dirname(image))
    before = os.stat(image).st_blocks * 512
    wrote = attach(blab, bstudent, "dd if=/dev/zero of=/var/big bs=1M count=1400 conv=fsync; echo rc=$?")
    assert "Disk quota exceeded" in wrote.stdout + wrote.stderr, wrote.stdout + wrote.stderr
    grown = os.stat(image).st_blocks * 512 - before
    assert grown < QUOTA + 256 * 2**20, grown  # the pool file grew by the quota at most
    after_free = os.statvfs(os.path.dirname(image))
    assert (host_free.f_bavail - after_free.f_bavail) * after_free.f_frsize < QUOTA + 256 * 2**20
    assert exclusive_of(blab, group_of(blab, bstudent)) <= QUOTA
    assert attach(blab, bstudent, "rm /var/big").returncode == 0


def test_a_snapshot_while_root_plants_links_holds_only_the_containers_files(
    blab: BtrfsLab, bstudent: Student
) -> None:
    """As the dir storage's attack (test_held_copies): links to / and to another rootfs, moved in a loop."""
    victim = blab.add_student(f"v{len(blab.students)}")
    try:
        victim_root = Path(blab.lxcpath) / victim.container / "rootfs"
        (victim_root / "home" / victim.name / "secret").write_text("the victim's thesis\n")
        canary = Path(blab.root) / f"{bstudent.name}-canary"
        canary.write_text("host canary\n")
        started(blab, bstudent)
        result = attach(blab, bstudent, (
            "mkdir -p /data/d && echo mine > /data/d/f && "
            "(while :; do mv /data/d /data/real && ln -s / /data/d && rm /data/d && "
            f"ln -s {victim_root} /data/d && rm /data/d && ln -s {canary} /data/d && rm /data/d && "
            "mv /data/real /data/d; done) </dev/null >/dev/null 2>&1 &"
        ))  # fmt: skip
        assert result.returncode == 0, result.stderr
        for round_ in range(3):
            made = blab.ssh(bstudent, "snapshot", f"links{round_}", timeout=600)
            assert made.returncode == 0, made.stderr  # atomic: nothing to race, never refused
            copy = (
                Path(blab.lxcpath) / bstudent.container / "gpushell-snapshots" / f"links{round_}" / "rootfs"
            )
            data = copy / "data" / "d"
            if data.is_symlink():
                assert os.readlink(data) in ("/", str(victim_root), str(canary))
            elif data.exists():
                assert (data / "f").read_text() == "mine\n"
            leaked = sh(
                ["grep", "-rl", "-e", "the victim's thesis", "-e", "host canary", str(copy)], check=False
            )
            assert leaked.stdout == "", leaked.stdout
        assert (victim_root / "home" / victim.name / "secret").read_text() == "the victim's thesis\n"
        assert canary.read_text() == "host canary\n"
    finally:
        blab.admin("remove", victim.name, "--purge", check=False)


# Container root's way out of the quota: a subvolume (or snapshot) of its own inside its
# rootfs, which is in no quota group of gpushell's.  Each of the four btrfs ioctls that
# make one, through syscall(2) with the ioctl's number as is and with bit 32 set: the
# kernel takes the cmd as a 32-bit int and drops it, seccomp sees all 64 bits.
# ARGV: the directory to make them in, a subvolume to snapshot.
SUBVOLUME_ESCAPES = r"""
use strict;
use Fcntl;
sysopen(my $dir, $ARGV[0], O_RDONLY | O_DIRECTORY) or die "open $ARGV[0]: $!";
sysopen(my $src, $ARGV[1], O_RDONLY | O_DIRECTORY) or die "open $ARGV[1]: $!";
my $from = fileno($src);
my @calls = (
    ["snap", 0x50009401, sub { pack("q a4088", $from, $_[0]) }],
    ["subvol", 0x5000940e, sub { pack("q a4088", 0, $_[0]) }],
    ["snap-v2", 0x50009417, sub { pack("q Q Q a32 a4040", $from, 0, 0, "", $_[0]) }],
    ["subvol-v2", 0x50009418, sub { pack("q Q Q a32 a4040", 0, 0, 0, "", $_[0]) }],
);
for my $call (@calls) {
    my ($name, $number, $args) = @$call;
    for my $high (0, 1) {
        my $buffer = $args->("escape-$name-$high");
        my $made = syscall(16, fileno($dir), $number | ($high << 32), $buffer);  # 16: ioctl on x86_64
        print "$name $high: ", ($made == -1 ? "$!" : "made"), "\n";
    }
}
# No btrfs ioctl: SUBVOL_CREATE's number with two more bits of the size field.  Refused if
# the profile's value and mask were read the wrong way round (mask 0x5000940e: every
# number holding all its bits matches); the kernel's ENOTTY proves the cmd is compared whole.
my $buffer = pack("q a4088", 0, "escape-near-miss");
syscall(16, fileno($dir), 0x50a0940e, $buffer) == -1 or die "near miss made something";
print "near-miss: $!\n";
"""
ESCAPE_CALLS = [f"{name} {high}" for name in ("snap", "subvol", "snap-v2", "subvol-v2") for high in (0, 1)]
NEAR_MISS = "near-miss: Inappropriate ioctl for device"  # the kernel's ENOTTY: it got there


def test_container_root_cannot_make_a_subvolume_out_of_its_quota(blab: BtrfsLab, bstudent: Student) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the script calls ioctl by its x86_64 system call number")
    # Unfiltered, the script makes all eight, and needs no privilege: nobody in a subvolume of its own.
    control = Path(blab.lxcpath) / ".seccomp-control"
    sh(["btrfs", "subvolume", "create", str(control)])
    try:
        os.chown(control, 65534, 65534)
        made = sh(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "perl", "-", str(control), str(control)],
            input=SUBVOLUME_ESCAPES,
        )  # fmt: skip
        expected = [*(f"{call}: made" for call in ESCAPE_CALLS), NEAR_MISS]
        assert made.stdout.splitlines() == expected, made.stdout + made.stderr
    finally:
        for name in os.listdir(control):
            sh(["btrfs", "subvolume", "delete", str(control / name)], check=False)
        sh(["btrfs", "subvolume", "delete", str(control)])

    started(blab, bstudent)
    init_status = Path(f"/proc/{blab.init_pid(bstudent)}/status").read_text()
    assert "\nSeccomp:\t2\n" in init_status  # LXC loaded the container's profile
    before = subvolume_paths(blab)
    refused = [*(f"{call}: Operation not permitted" for call in ESCAPE_CALLS), NEAR_MISS]
    # As the student over ssh into the container (a child of its init), root by sudo ...
    inside = blab.ssh(bstudent, "sudo -n perl - /root /", port=bstudent.port, command_input=SUBVOLUME_ESCAPES)
    assert inside.stdout.splitlines() == refused, inside.stdout + inside.stderr
    # ... and as root attached from the host.
    attached = sh(
        ["lxc-attach", "-P", blab.lxcpath, "-n", bstudent.container, "--clear-env", "--",
         "perl", "-", f"/home/{bstudent.name}", "/"],
        check=False, input=SUBVOLUME_ESCAPES,
    )  # fmt: skip
    assert attached.stdout.splitlines() == refused, attached.stdout + attached.stderr
    assert subvolume_paths(blab) == before
    rootfs = Path(blab.lxcpath) / bstudent.container / "rootfs"
    for directory in (rootfs / "root", rootfs / "home" / bstudent.name):
        assert not [path for path in directory.iterdir() if path.name.startswith("escape-")]
    # Other ioctls still work inside (lsattr's FS_IOC_GETFLAGS): the profile names those four only.
    flags = attach(blab, bstudent, "lsattr -d /root >/dev/null && echo ok")
    assert flags.stdout == "ok\n", flags.stdout + flags.stderr
