"""GPU device nodes in a real container, with stand-in nodes instead of a GPU.

This machine has no NVIDIA GPU or driver.  The stand-ins are real character
device nodes (mknod c 195 N) in a directory under the lab's root, named by
the registry's `gpu_devices`; never in the real /dev.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

import pytest

from gpushell.core import registry

from .lab import Lab, Student, sh

FAKE_UVM_MAJOR = 509  # nvidia-uvm's major is dynamic; any unused number will do for a stand-in
STAND_INS = {
    "nvidia0": (195, 0),
    "nvidia1": (195, 1),
    "nvidiactl": (195, 255),
    "nvidia-uvm": (FAKE_UVM_MAJOR, 0),
}
ENXIO, EPERM = 6, 1


@contextlib.contextmanager
def stand_in_devices(lab: Lab) -> Iterator[str]:
    """A directory of stand-in NVIDIA nodes, named in the registry as gpu_devices."""
    directory = f"{lab.root}/gpudev"
    os.mkdir(directory, 0o755)
    try:
        for name, (major, minor) in STAND_INS.items():
            os.mknod(f"{directory}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(f"{directory}/{name}", 0o666)
        with lab.setting_added(f"gpu_devices: {directory}\n"):
            yield directory
    finally:
        for name in STAND_INS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{directory}/{name}")
        os.rmdir(directory)


def attach(lab: Lab, student: Student, script: str) -> str:
    """Run a perl one-liner as root inside the container (perl-base is in every Debian)."""
    result = sh(["lxc-attach", "-P", lab.lxcpath, "-n", student.container, "--", "perl", "-e", script])
    return result.stdout


def open_errno(lab: Lab, student: Student, path: str) -> str:
    return attach(lab, student, f'open(my $f, "<", "{path}") ? print "opened" : print $!+0')


@pytest.fixture
def gpu_student(lab: Lab) -> Iterator[tuple[Student, str]]:
    with stand_in_devices(lab) as directory:
        made = lab.add_student("gpu", "--gpus", "0")
        try:
            yield made, directory
        finally:
            lab.admin("remove", made.name, "--purge", check=False)


def test_a_container_opens_only_its_assigned_gpu(lab: Lab, gpu_student: tuple[Student, str]) -> None:
    """The devices cgroup lets the container open /dev/nvidia0 and nothing else of the GPUs'.

    Without a GPU, the open() itself tells the two cases apart: a node whose
    numbers the devices cgroup allows reaches the kernel's character-device
    lookup, which finds no driver behind 195:N and fails with ENXIO; a node
    the cgroup denies fails earlier, in the permission check, with EPERM.
    So ENXIO on nvidia0 and EPERM on a node for 195:1 prove the rules.

    The unassigned node cannot be made by container root: mknod of a device
    in a user namespace is refused by the kernel (EPERM, no CAP_MKNOD in the
    initial namespace), which the test shows too.  So host root makes it in
    the container's own root file system (under the lab's lxcpath), where the
    container sees it; only the devices cgroup stands between it and the open.
    """
    student, directory = gpu_student
    entry = registry.parse(lab.read_registry(), lab.registry).users[student.name]
    assert entry.gpus == (0,)
    with open(f"{lab.lxcpath}/{student.container}/config", encoding="utf-8") as stream:
        config = stream.read().splitlines()
    assert f"lxc.mount.entry = {directory}/nvidia0 dev/nvidia0 none bind,optional,create=file 0 0" in config
    assert not [line for line in config if "nvidia1" in line]
    for rule in ("c 195:0 rwm", "c 195:255 rwm", f"c {FAKE_UVM_MAJOR}:0 rwm"):
        assert f"lxc.cgroup.devices.allow = {rule}" in config
        assert f"lxc.cgroup2.devices.allow = {rule}" in config
    assert "lxc.cgroup.devices.allow = c 195:1 rwm" not in config

    assert lab.ssh(student, "start").returncode == 0
    stand_in = f"{lab.lxcpath}/{student.container}/rootfs/root/nvidia1-stand-in"
    try:
        numbers = attach(
            lab, student, 'my @s = stat("/dev/nvidia0"); printf "%d:%d", $s[6] >> 8, $s[6] & 255'
        )
        assert numbers == "195:0"
        assert open_errno(lab, student, "/dev/nvidia0") == str(ENXIO)
        assert open_errno(lab, student, "/dev/nvidiactl") == str(ENXIO)
        assert open_errno(lab, student, "/dev/nvidia-uvm") == str(ENXIO)
        assert attach(lab, student, 'print -e "/dev/nvidia1" ? "present" : "absent"') == "absent"

        made_inside = attach(lab, student, 'system("mknod", "/root/nv1", "c", "195", "1"); print $? >> 8')
        assert made_inside != "0", "container root could mknod a device node"
        os.mknod(stand_in, 0o666 | stat.S_IFCHR, os.makedev(195, 1))
        assert open_errno(lab, student, "/root/nvidia1-stand-in") == str(EPERM)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stand_in)
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False)


def test_apply_agrees_with_the_config_add_wrote(lab: Lab, gpu_student: tuple[Student, str]) -> None:
    student, directory = gpu_student
    dry = lab.admin("apply", "--dry-run").stdout
    assert f"regenerate {lab.lxcpath}/{student.container}/config" not in dry
    # A node appearing later (a GPU hot-added, or a driver reload) reaches the config through apply.
    os.unlink(f"{directory}/nvidia-uvm")
    try:
        dry = lab.admin("apply", "--dry-run").stdout
        assert f"would regenerate {lab.lxcpath}/{student.container}/config" in dry
    finally:
        os.mknod(f"{directory}/nvidia-uvm", 0o666 | stat.S_IFCHR, os.makedev(FAKE_UVM_MAJOR, 0))
