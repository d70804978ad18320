"""`driver: host`: the host driver's files bind-mounted read-only into a real GPU container.

No NVIDIA driver here: the "host driver" is a stand-in tree under the lab's
root, named by the registry's `driver_root` (like `gpu_devices` for the
stand-in device nodes); nothing is made in the real library directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from .lab import Lab, sh
from .test_gpus import stand_in_devices

LIB = "usr/lib/x86_64-linux-gnu"
VERSION = "550.54.14"


@contextlib.contextmanager
def stand_in_driver(lab: Lab) -> Iterator[str]:
    root = f"{lab.root}/driver"
    setting = f"driver_root: {root}\n"
    try:
        os.makedirs(f"{root}/{LIB}")
        os.makedirs(f"{root}/usr/bin")
        os.makedirs(f"{root}/proc/driver/nvidia")
        with open(f"{root}/proc/driver/nvidia/version", "w", encoding="ascii") as stream:
            stream.write(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {VERSION}  Thu Feb 22 2024\n")
        for name, text in (
            (f"{LIB}/libcuda.so.{VERSION}", "stand-in libcuda\n"),
            (f"{LIB}/libnvidia-ml.so.{VERSION}", "stand-in nvml\n"),
            (f"{LIB}/libcuda.so.535.183.01", "old driver\n"),
            ("usr/bin/nvidia-smi", "#!/bin/sh\necho stand-in nvidia-smi\n"),
        ):
            with open(f"{root}/{name}", "w", encoding="ascii") as stream:
                stream.write(text)
        os.chmod(f"{root}/usr/bin/nvidia-smi", 0o755)
        os.symlink(f"libcuda.so.{VERSION}", f"{root}/{LIB}/libcuda.so.1")
        lab.write_registry(lab.read_registry().replace("users:\n", setting + "users:\n", 1))
        yield root
    finally:
        lab.write_registry(lab.read_registry().replace(setting, ""))
        shutil.rmtree(root, ignore_errors=True)


def run_in(lab: Lab, container: str, *argv: str) -> tuple[int, str]:
    result = sh(["lxc-attach", "-P", lab.lxcpath, "-n", container, "--", *argv], check=False)
    return result.returncode, result.stdout + result.stderr


def test_host_driver_files_are_bound_read_only_into_a_gpu_container(lab: Lab) -> None:
    with stand_in_devices(lab), stand_in_driver(lab) as root:
        student = lab.add_student("drv", "--gpus", "0")
        try:
            with open(f"{lab.lxcpath}/{student.container}/config", encoding="utf-8") as stream:
                config = stream.read().splitlines()
            entry = "none bind,ro,optional,create=file 0 0"
            for source, target in (
                (f"{LIB}/libcuda.so.{VERSION}", f"{LIB}/libcuda.so.1"),
                (f"{LIB}/libcuda.so.{VERSION}", f"{LIB}/libcuda.so.{VERSION}"),
                (f"{LIB}/libnvidia-ml.so.{VERSION}", f"{LIB}/libnvidia-ml.so.{VERSION}"),
                ("usr/bin/nvidia-smi", "usr/bin/nvidia-smi"),
            ):
                assert f"lxc.mount.entry = {root}/{source} {target} {entry}" in config
            assert not [line for line in config if "535.183.01" in line]
            assert "would regenerate" not in lab.admin("apply", "--dry-run").stdout

            assert lab.ssh(student, "start").returncode == 0
            assert run_in(lab, student.container, "cat", f"/{LIB}/libcuda.so.1") == (0, "stand-in libcuda\n")
            assert run_in(lab, student.container, "cat", f"/{LIB}/libnvidia-ml.so.{VERSION}") == (
                0,
                "stand-in nvml\n",
            )
            assert run_in(lab, student.container, "nvidia-smi") == (0, "stand-in nvidia-smi\n")
            assert run_in(lab, student.container, "test", "-e", f"/{LIB}/libcuda.so.535.183.01")[0] == 1
            # Read-only, even for the container's root.
            status, _ = run_in(lab, student.container, "sh", "-c", f"echo x >> /{LIB}/libcuda.so.1")
            assert status != 0
            with open(f"{root}/{LIB}/libcuda.so.{VERSION}", encoding="ascii") as stream:
                assert stream.read() == "stand-in libcuda\n"
        finally:
            sh(["lxc-stop", "-P", lab.lxcpath, "-n", student.container, "-k"], check=False)
            lab.admin("remove", student.name, "--purge", check=False)
