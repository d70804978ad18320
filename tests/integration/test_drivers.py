"""`driver: host`: the host driver's files bound read-only into a real GPU container at each start.

No NVIDIA driver here: the "host driver" is a stand-in tree under the lab's
root, named by the registry's `driver_root` (like `gpu_devices` for the
stand-in device nodes); nothing is made in the real library directories.
The container's config names only the installed mount hook
(gpushell-driver-hook, from `make install`), which lists the tree at each
start: so switching the tree to another version is a driver upgrade.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from gpushell.admin.driversync import INSIDE

from .lab import Lab, Student, sh
from .test_gpus import stand_in_devices

LIB = "usr/lib/x86_64-linux-gnu"
VERSION, NEW_VERSION, OLD_VERSION = "550.54.14", "560.35.03", "535.183.01"
HOOK = "/usr/local/bin/gpushell-driver-hook"


def install_driver(root: str, version: str) -> None:
    """Make the stand-in tree look like `version` is loaded: its files, links and proc file."""
    for directory in (LIB, "usr/bin"):
        shutil.rmtree(f"{root}/{directory}", ignore_errors=True)
        os.makedirs(f"{root}/{directory}")
    os.makedirs(f"{root}/proc/driver/nvidia", exist_ok=True)
    with open(f"{root}/proc/driver/nvidia/version", "w", encoding="ascii") as stream:
        stream.write(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Thu Feb 22 2024\n")
    for name, text in (
        (f"{LIB}/libcuda.so.{version}", f"stand-in libcuda {version}\n"),
        (f"{LIB}/libnvidia-ml.so.{version}", f"stand-in nvml {version}\n"),
        (f"{LIB}/libcuda.so.{OLD_VERSION}", "old driver\n"),
        ("usr/bin/nvidia-smi", f"#!/bin/sh\necho stand-in nvidia-smi {version}\n"),
    ):
        with open(f"{root}/{name}", "w", encoding="ascii") as stream:
            stream.write(text)
    os.chmod(f"{root}/usr/bin/nvidia-smi", 0o755)
    os.symlink(f"libcuda.so.{version}", f"{root}/{LIB}/libcuda.so.1")


@contextlib.contextmanager
def stand_in_driver(lab: Lab) -> Iterator[str]:
    root = f"{lab.root}/driver"
    try:
        install_driver(root, VERSION)
        with lab.setting_added(f"driver_root: {root}\n"):
            yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def gpu_student(lab: Lab, suffix: str) -> Iterator[Student]:
    student = lab.add_student(suffix, "--gpus", "0")
    try:
        yield student
    finally:
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False)
        lab.admin("remove", student.name, "--purge", check=False)


def run_in(lab: Lab, container: str, *argv: str) -> tuple[int, str]:
    result = sh(["lxc-attach", "-P", lab.lxcpath, "-n", container, "--", *argv], check=False)
    return result.returncode, result.stdout + result.stderr


def exists_in(lab: Lab, container: str, path: str) -> bool:
    return run_in(lab, container, "test", "-e", path)[0] == 0


def test_host_driver_files_follow_a_driver_upgrade_without_apply(lab: Lab) -> None:
    with stand_in_devices(lab), stand_in_driver(lab) as root, gpu_student(lab, "drv") as student:
        with open(f"{lab.lxcpath}/{student.container}/config", encoding="utf-8") as stream:
            config = stream.read().splitlines()
        assert f"lxc.hook.mount = {HOOK} {root}" in config
        assert not [line for line in config if "libcuda" in line or VERSION in line]
        assert "regenerate" not in lab.admin("apply", "--dry-run").stdout

        assert lab.ssh(student, "start").returncode == 0
        c = student.container
        assert run_in(lab, c, "cat", f"/{LIB}/libcuda.so.1") == (0, f"stand-in libcuda {VERSION}\n")
        assert run_in(lab, c, "cat", f"/{LIB}/libnvidia-ml.so.{VERSION}") == (0, f"stand-in nvml {VERSION}\n")
        assert run_in(lab, c, "nvidia-smi") == (0, f"stand-in nvidia-smi {VERSION}\n")
        assert not exists_in(lab, c, f"/{LIB}/libcuda.so.{OLD_VERSION}")
        # Read-only, even for the container's root.
        status, _ = run_in(lab, c, "sh", "-c", f"echo x >> /{LIB}/libcuda.so.1")
        assert status != 0
        with open(f"{root}/{LIB}/libcuda.so.{VERSION}", encoding="ascii") as stream:
            assert stream.read() == f"stand-in libcuda {VERSION}\n"

        # The upgrade: new file names and a new module version; no apply.
        sh(["lxc-stop", "-P", lab.lxcpath, "-n", c, "-k"])
        install_driver(root, NEW_VERSION)
        assert lab.ssh(student, "start").returncode == 0
        assert run_in(lab, c, "cat", f"/{LIB}/libcuda.so.1") == (0, f"stand-in libcuda {NEW_VERSION}\n")
        assert run_in(lab, c, "cat", f"/{LIB}/libnvidia-ml.so.{NEW_VERSION}")[0] == 0
        assert run_in(lab, c, "nvidia-smi") == (0, f"stand-in nvidia-smi {NEW_VERSION}\n")
        for gone in (f"libcuda.so.{VERSION}", f"libnvidia-ml.so.{VERSION}"):
            assert not exists_in(lab, c, f"/{LIB}/{gone}")
        assert run_in(lab, c, "sh", "-c", f"echo x >> /{LIB}/libcuda.so.1")[0] != 0


def test_a_link_planted_at_a_driver_target_stops_the_hook_not_a_host_file(lab: Lab) -> None:
    canary = f"{lab.root}/host-canary"
    with stand_in_devices(lab), stand_in_driver(lab), gpu_student(lab, "drvln") as student:
        with open(canary, "w", encoding="ascii") as stream:
            stream.write("host canary\n")
        os.chmod(canary, 0o666)  # even the container's mapped root could write it
        try:
            # What the container's root can do to its own rootfs: a link at libcuda.so.1
            # to a host path (before pivot_root, absolute links resolve on the host).
            target = f"{lab.lxcpath}/{student.container}/rootfs/{LIB}/libcuda.so.1"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            os.symlink(canary, target)
            log = f"{lab.root}/{student.container}-hook.log"
            started = sh(
                ["lxc-start", "-P", lab.lxcpath, "-n", student.container, "-o", log, "-l", "DEBUG"],
                check=False,
            )
            with open(log, encoding="utf-8", errors="replace") as stream:
                text = stream.read()
            assert started.returncode != 0, "the hook let the container start on a planted link"
            assert "gpushell-driver-hook" in text and "is a link" in text
            with open(canary, encoding="ascii") as stream:
                assert stream.read() == "host canary\n"
            assert os.path.islink(target) and os.readlink(target) == canary
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(canary)


def test_driver_sync_runs_the_installer_only_where_the_driver_differs(lab: Lab) -> None:
    """driver: container; a stand-in installer writes libcuda.so.<host version> where it runs."""
    installer = f"{lab.root}/NVIDIA-stand-in.run"
    with open(installer, "w", encoding="ascii") as stream:
        stream.write(
            "#!/bin/sh\n"
            '[ "$1 $2 $3" = "--no-kernel-module --silent --no-questions" ] || exit 3\n'
            f"rm -f /{LIB}/libcuda.so.* /{LIB}/libnvidia-ml.so.*\n"  # as NVIDIA's removes the old driver
            f"echo stand-in > /{LIB}/libcuda.so.{VERSION}\n"
            "echo ran >> /root/installer-ran\n"
        )
    try:
        with (
            lab.setting_added("driver: container\n"),
            stand_in_devices(lab),
            stand_in_driver(lab),
            gpu_student(lab, "syncok") as matching,
            gpu_student(lab, "syncold") as lagging,
        ):
            rootfs = f"{lab.lxcpath}/{{}}/rootfs"
            with open(f"{rootfs.format(matching.container)}/{LIB}/libcuda.so.{VERSION}", "w") as stream:
                stream.write("already there\n")
            with open(f"{rootfs.format(lagging.container)}/{LIB}/libcuda.so.{OLD_VERSION}", "w") as stream:
                stream.write("old\n")
            before = lab.admin("doctor", check=False).stdout
            assert f"{lagging.name}: container {lagging.container} has driver {OLD_VERSION}" in before

            result = lab.admin("driver", "sync", "--installer", installer, check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"{lagging.name}: installed NVIDIA driver {VERSION}" in result.stdout
            assert matching.name not in result.stdout
            assert os.path.exists(f"{rootfs.format(lagging.container)}/root/installer-ran")
            assert not os.path.exists(f"{rootfs.format(matching.container)}/root/installer-ran")
            assert not os.path.exists(f"{rootfs.format(lagging.container)}{INSIDE}")
            assert lab.state(lagging) == "STOPPED"  # started for the installer, stopped again

            after = lab.admin("doctor", check=False).stdout
            for student in (matching, lagging):
                assert f"ok: {student.name}: container {student.container} has the host's NVIDIA" in after
            again = lab.admin("driver", "sync", "--installer", installer)
            assert "every GPU container has the host's NVIDIA driver" in again.stdout
    finally:
        os.unlink(installer)
