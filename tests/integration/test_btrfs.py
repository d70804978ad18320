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
