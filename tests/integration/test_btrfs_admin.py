"""The admin side of btrfs storage on a real loop-backed btrfs pool, made and removed here.

One lab whose lxcpath is absent at first: `init --storage btrfs --pool-file`
makes the pool and mounts it there; apply mounts it again after an unmount
(as after a reboot); then the lab is put on `storage: dir` (a dir lab on a
btrfs filesystem, the migration case), two students are added and started,
and `storage migrate` moves them one at a time.  Clean-up stops the lab's
containers, unmounts the pool, detaches any loop device backed by the
lab's pool file (and no other) and removes the file, even after a failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator

import pytest

from .lab import Lab, Student, sh

POOL_SIZE = "3G"


class PoolLab(Lab):
    """A lab whose lxcpath is a loop-backed btrfs pool that its own init makes."""

    def __init__(self) -> None:
        super().__init__()
        self.pool_file = f"/var/tmp/{self.prefix}-pool.img"

    def create(self) -> None:
        original = self.admin

        def init_with_pool(*args: str, check: bool = True) -> object:
            if args == ("init",):
                args = ("init", "--storage", "btrfs", "--pool-file", self.pool_file, "--size", POOL_SIZE)
            return original(*args, check=check)

        self.admin = init_with_pool  # type: ignore[method-assign, assignment]
        try:
            super().create()
        finally:
            del self.admin

    def loops(self) -> list[str]:
        """Loop devices backed by this lab's pool file (only those)."""
        out = sh(["losetup", "--noheadings", "--output", "NAME", "--associated", self.pool_file], check=False)
        return out.stdout.split()

    def mounted(self) -> bool:
        return os.path.ismount(self.lxcpath)

    def destroy(self) -> None:
        errors = []
        if self.mounted():
            for name in sh(["lxc-ls", "-P", self.lxcpath, "-1"], check=False).stdout.split():
                sh(["lxc-stop", "-P", self.lxcpath, "-n", name, "-k"], check=False)
            for _ in range(20):
                if sh(["umount", self.lxcpath], check=False).returncode == 0 or not self.mounted():
                    break
                time.sleep(0.5)
            if self.mounted():
                errors.append(f"could not unmount {self.lxcpath}")
        for device in self.loops():
            sh(["losetup", "--detach", device], check=False)
        if not self.mounted():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pool_file)
        try:
            super().destroy()
        finally:
            if errors:
                raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="module")
def pool_lab() -> Iterator[PoolLab]:
    if os.geteuid() != 0:
        pytest.fail("the btrfs tests need root (loop devices, mounts)")
    instance = PoolLab()
    try:
        instance.create()
        yield instance
    finally:
        instance.destroy()


def attach(lab: Lab, student: Student, *command: str) -> str:
    argv = ["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--", *command]
    return sh(argv, timeout=60).stdout


def wait_running(lab: Lab, student: Student) -> None:
    deadline = time.monotonic() + 60
    while lab.state(student) != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lab.state(student) == "RUNNING"


def test_init_made_mounted_and_registered_the_pool(pool_lab: PoolLab) -> None:
    assert os.path.getsize(pool_lab.pool_file) == 3 * 2**30
    assert os.stat(pool_lab.pool_file).st_blocks * 512 < 2**30  # sparse
    assert pool_lab.mounted()
    assert sh(["stat", "-f", "-c", "%T", pool_lab.lxcpath]).stdout.strip() == "btrfs"
    assert sh(["btrfs", "qgroup", "show", pool_lab.lxcpath], check=False).returncode == 0  # quotas on
    text = pool_lab.read_registry()
    assert "storage: btrfs\n" in text and f"pool_file: {pool_lab.pool_file}\n" in text
    # Again: nothing to do, nothing made twice.
    again = pool_lab.admin(
        "init", "--storage", "btrfs", "--pool-file", pool_lab.pool_file, "--size", POOL_SIZE
    )
    assert "made a btrfs pool" not in again.stdout and len(pool_lab.loops()) == 1


def test_init_refuses_btrfs_where_the_lxcpath_is_not(pool_lab: PoolLab) -> None:
    other = f"/var/tmp/{pool_lab.prefix}-plain"
    text = pool_lab.read_registry().replace(pool_lab.lxcpath, other)
    text = "".join(line + "\n" for line in text.splitlines() if not line.startswith("pool_file:"))
    try:
        with pool_lab.registry_replaced(text):
            result = pool_lab.admin("init", "--storage", "btrfs", check=False)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [
            f"gpushell-admin: {other} is on ext4, not btrfs: mount a btrfs disk or partition there first "
            "(or, to try it, make a loop-backed pool: --pool-file PATH --size SIZE)"
        ]
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(other)


def test_apply_mounts_the_pool_again_after_an_unmount(pool_lab: PoolLab) -> None:
    template_root = os.path.join(pool_lab.lxcpath, pool_lab.template, "rootfs")
    assert os.path.isdir(template_root)
    sh(["umount", pool_lab.lxcpath])  # as after a reboot: nothing mounted, no loop device left
    assert not pool_lab.mounted() and pool_lab.loops() == []
    dry = pool_lab.admin("apply", "--dry-run")
    assert f"would mount the pool {pool_lab.pool_file} at {pool_lab.lxcpath}" in dry.stdout
    assert not pool_lab.mounted()
    result = pool_lab.admin("apply")
    assert f"done: mount the pool {pool_lab.pool_file} at {pool_lab.lxcpath}" in result.stdout
    assert pool_lab.mounted() and len(pool_lab.loops()) == 1
    assert os.path.isdir(template_root)
    assert "mount the pool" not in pool_lab.admin("apply").stdout


def make_snapshot(lab: Lab, student: Student, name: str) -> str:
    """A snapshot in the helper's layout (a copy of the stopped-or-not rootfs, as root makes one)."""
    directory = os.path.join(lab.lxcpath, student.container, "gpushell-snapshots", name)
    os.makedirs(directory, mode=0o700)
    sh(
        [
            "cp",
            "-a",
            os.path.join(lab.lxcpath, student.container, "rootfs"),
            os.path.join(directory, "rootfs"),
        ]
    )
    with open(os.path.join(directory, "info"), "w", encoding="ascii") as stream:
        stream.write(f"created={int(time.time())}\nsize=1\nrunning=0\n")
    return os.path.join(directory, "rootfs")


def is_subvolume(path: str) -> bool:
    return os.lstat(path).st_ino == 256


def test_migrate_moves_a_running_dir_lab_one_student_at_a_time(pool_lab: PoolLab) -> None:
    # A dir lab on a btrfs filesystem: the case storage migrate is for.
    pool_lab.write_registry(pool_lab.read_registry().replace("storage: btrfs\n", "storage: dir\n"))
    alice, bob = pool_lab.add_student("ma"), pool_lab.add_student("mb")
    for student in (alice, bob):
        pool_lab.admin("set", student.name, "disk=1G")
        assert not is_subvolume(os.path.join(pool_lab.lxcpath, student.container))
        sh(["lxc-start", "-P", pool_lab.lxcpath, "-n", student.container])
        wait_running(pool_lab, student)
        attach(pool_lab, student, "sh", "-c", f"echo {student.name} > /root/mark")
    snapshot = make_snapshot(pool_lab, alice, "before")
    bob_pid = pool_lab.init_pid(bob)
    alice_pid = pool_lab.init_pid(alice)

    first = pool_lab.admin("storage", "migrate", alice.name)
    assert f"moved {alice.name}: container {alice.container} is a subvolume now, 1 snapshot(s) converted" in (
        first.stdout
    )
    assert "1 student(s) still on dir storage" in first.stdout
    assert "storage: dir\n" in pool_lab.read_registry()
    alice_dir = os.path.join(pool_lab.lxcpath, alice.container)
    assert is_subvolume(alice_dir) and is_subvolume(os.path.join(alice_dir, "rootfs"))
    assert is_subvolume(snapshot)
    # Read-only, as every snapshot made on btrfs is: not even root writes into it.
    assert sh(["btrfs", "property", "get", "-ts", snapshot, "ro"]).stdout.strip() == "ro=true"
    with pytest.raises(OSError) as refused:
        open(os.path.join(snapshot, "root", "planted"), "w").close()
    assert refused.value.errno == errno.EROFS
    wait_running(pool_lab, alice)
    assert pool_lab.init_pid(alice) != alice_pid  # stopped for its copy, started again
    assert pool_lab.init_pid(bob) == bob_pid  # never stopped for alice's
    assert not is_subvolume(os.path.join(pool_lab.lxcpath, bob.container))

    # As a run killed between making bob's subvolume and renaming it leaves one: the next run removes it.
    stray = os.path.join(pool_lab.lxcpath, f".{bob.container}.new-0123456789ab")
    sh(["btrfs", "subvolume", "create", stray])
    second = pool_lab.admin("storage", "migrate")
    assert f"{alice.name}: already moved" in second.stdout and f"moved {bob.name}" in second.stdout
    assert "every student has moved: the registry says storage: btrfs" in second.stdout
    assert "storage: btrfs\n" in pool_lab.read_registry()
    for student in (alice, bob):
        wait_running(pool_lab, student)
        assert attach(pool_lab, student, "cat", "/root/mark").strip() == student.name
    left = [
        entry
        for entry in os.listdir(pool_lab.lxcpath)
        if any(w in entry for w in ("migrat", "-old", ".new-"))
    ]
    assert left == []

    doctor = pool_lab.admin("doctor", check=False).stdout.splitlines()
    assert f"ok: pool {pool_lab.pool_file} is mounted at {pool_lab.lxcpath}" in doctor
    assert f"ok: storage btrfs: {pool_lab.lxcpath} is on btrfs" in doctor
    assert f"ok: btrfs quotas are on for {pool_lab.lxcpath}" in doctor
    for student in (alice, bob):
        assert any(
            line.startswith(f"ok: {student.name}: ") and "of 1G disk quota used" in line for line in doctor
        ), doctor
