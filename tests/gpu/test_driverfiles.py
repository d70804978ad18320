"""driverfiles: the host driver's version and files, on recorded layouts in stand-in trees."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pathlib

import pytest

from gpushell.admin import doctor
from gpushell.containers import lxcconfig
from gpushell.core.model import Registry, User
from gpushell.gpu import driverfiles, gpudevices

PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.183.01  Release Build  "
    "(dvs-builder@U16-A24-23-2)  Sun May 12 19:39:15 UTC 2024\n"
)
LIB = "/usr/lib/x86_64-linux-gnu"


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (PROPRIETARY, "550.54.14"),
        (OPEN, "535.183.01"),
        ("NVRM version: NVIDIA UNIX Kernel Module  470.42  Tue\n", "470.42"),
        ("", None),
        ("NVRM version: something else\n", None),
    ],
)
def test_parse_version(text, version):
    assert driverfiles.parse_version(text) == version


def make_tree(root: pathlib.Path, files: list[str], links: dict[str, str], version_text: str | None) -> str:
    """A stand-in host: regular files, symlinks and /proc/driver/nvidia/version under root."""
    for path in files:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text("stand-in\n")
    for path, target in links.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path.lstrip("/"))
    if version_text is not None:
        (root / driverfiles.VERSION_FILE).parent.mkdir(parents=True)
        (root / driverfiles.VERSION_FILE).write_text(version_text)
    return str(root)


DEBIAN_550 = [
    f"{LIB}/libcuda.so.550.54.14",
    f"{LIB}/libnvidia-ml.so.550.54.14",
    f"{LIB}/libnvidia-ptxjitcompiler.so.550.54.14",
    f"{LIB}/libGLX_nvidia.so.550.54.14",
    f"{LIB}/libcuda.so.535.183.01",  # an older driver's leftover
    f"{LIB}/libc.so.6",
    f"{LIB}/libnvidia-ml.so.550.54.14.bak",
    "/usr/bin/nvidia-smi",
    "/usr/bin/nvidia-debugdump",
    "/usr/bin/ls",
]
DEBIAN_550_LINKS = {
    f"{LIB}/libcuda.so.1": "libcuda.so.550.54.14",
    f"{LIB}/libcuda.so": "libcuda.so.1",
    f"{LIB}/libnvidia-ml.so.1": "libnvidia-ml.so.550.54.14",
    f"{LIB}/libnvidia-old.so.1": "libnvidia-old.so.535.183.01",  # dangling, old version
    f"{LIB}/libnvidia-out.so.1": "/opt/elsewhere/libnvidia-out.so.550.54.14",  # leaves the dir
    f"{LIB}/libloop.so": "libloop.so",
}


def test_files_of_a_debian_host(tmp_path):
    root = make_tree(tmp_path, DEBIAN_550, DEBIAN_550_LINKS, PROPRIETARY)
    version, files = driverfiles.read_host(root)
    assert version == "550.54.14"
    assert files == (
        ("/usr/bin/nvidia-debugdump", "/usr/bin/nvidia-debugdump"),
        ("/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi"),
        (f"{LIB}/libGLX_nvidia.so.550.54.14", f"{LIB}/libGLX_nvidia.so.550.54.14"),
        (f"{LIB}/libcuda.so.550.54.14", f"{LIB}/libcuda.so"),
        (f"{LIB}/libcuda.so.550.54.14", f"{LIB}/libcuda.so.1"),
        (f"{LIB}/libcuda.so.550.54.14", f"{LIB}/libcuda.so.550.54.14"),
        (f"{LIB}/libnvidia-ml.so.550.54.14", f"{LIB}/libnvidia-ml.so.1"),
        (f"{LIB}/libnvidia-ml.so.550.54.14", f"{LIB}/libnvidia-ml.so.550.54.14"),
        (f"{LIB}/libnvidia-ptxjitcompiler.so.550.54.14", f"{LIB}/libnvidia-ptxjitcompiler.so.550.54.14"),
    )


def test_a_redhat_style_host_uses_lib64(tmp_path):
    root = make_tree(
        tmp_path,
        ["/usr/lib64/libcuda.so.535.183.01", "/usr/lib64/libnvidia-ml.so.535.183.01"],
        {"/usr/lib64/libcuda.so.1": "libcuda.so.535.183.01"},
        OPEN,
    )
    _, files = driverfiles.read_host(root)
    assert [target for _, target in files] == [
        "/usr/lib64/libcuda.so.1",
        "/usr/lib64/libcuda.so.535.183.01",
        "/usr/lib64/libnvidia-ml.so.535.183.01",
    ]


def test_no_driver_no_files(tmp_path):
    root = make_tree(tmp_path, DEBIAN_550, DEBIAN_550_LINKS, None)
    assert driverfiles.read_host(root) == (None, ())
    assert driverfiles.read_host(str(tmp_path / "absent")) == (None, ())


def test_stale_placeholders_are_only_empty_driver_named_files_not_mounted_now():
    present = {
        LIB: {
            "libcuda.so.1": 0,  # mounted on now
            "libcuda.so.535.183.01": 0,  # an older driver's placeholder
            "libnvidia-ml.so.535.183.01": 0,
            "libnvidia-ml.so.535.183.02": 12,  # a real file: never taken
            "libc.so.6": 0,  # not a driver name
            "libcuda.so.old": 0,  # nor this
        },
        "/usr/bin": {"nvidia-smi": 0, "nvidia-debugdump": 0, "true": 0},
        "/usr/lib64": {},
    }
    files = (
        (f"{LIB}/libcuda.so.550.54.14", f"{LIB}/libcuda.so.1"),
        ("/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi"),
    )
    assert driverfiles.stale_placeholders(present, files) == [
        "/usr/bin/nvidia-debugdump",
        f"{LIB}/libcuda.so.535.183.01",
        f"{LIB}/libnvidia-ml.so.535.183.01",
    ]
    assert driverfiles.stale_placeholders({}, files) == []


def registry(driver: str, gpus: object = (0,)) -> tuple[Registry, User]:
    user = User("alice", 22001, ipaddress.IPv4Address("10.0.3.2"), 1065536, "alice", gpus, ())  # type: ignore[arg-type]
    reg = Registry(
        "/etc/gpushell.yaml", "gpu1", "lxcbr0", ipaddress.IPv4Network("10.0.3.0/24"), (22001, 22999),
        "tpl", "/var/lib/lxc", "GPUSHELL", 1000000, 65536, "none", (), 60.0, 3600, True,
        {"alice": user}, driver=driver, driver_root="/srv/drv",
    )  # fmt: skip
    return reg, user


NODES = (gpudevices.Node("nvidia0", 195, 0), gpudevices.Node("nvidiactl", 195, 255))


def test_config_runs_the_driver_hook_only_for_host_mode_and_gpu_users():
    hook = "lxc.hook.mount = /usr/local/bin/gpushell-driver-hook /srv/drv\n"
    reg, user = registry("host")
    config = lxcconfig.container_config(reg, user, "/r", gpu_nodes=NODES)
    assert hook in config
    assert "libcuda" not in config  # no version is frozen into the config
    assert "lxc.hook" not in lxcconfig.container_config(reg, user, "/r", gpu_nodes=())
    reg, user = registry("container")
    assert "lxc.hook" not in lxcconfig.container_config(reg, user, "/r", gpu_nodes=NODES)


@pytest.mark.parametrize(
    ("names", "versions", "problem"),
    [
        (["libcuda.so.550.54.14", "libnvidia-ml.so.550.54.14", "libcuda.so.1"], {"550.54.14"}, None),
        (["libcuda.so.535.183.01"], {"535.183.01"}, "has driver 535.183.01, the host 550.54.14"),
        (
            ["libcuda.so.535.183.01", "libnvidia-ml.so.550.54.14"],
            {"535.183.01", "550.54.14"},
            "has driver 535.183.01, 550.54.14, the host 550.54.14",
        ),
        (["libc.so.6"], set(), "has no NVIDIA user-space driver (host: 550.54.14)"),
    ],
)
def test_container_versions_and_mismatch(names, versions, problem):
    found = driverfiles.container_versions(names)
    assert found == versions
    assert driverfiles.mismatch("550.54.14", found) == problem
    assert driverfiles.mismatch(None, found) is None


def test_doctor_reports_a_container_driver_mismatch_with_a_fix():
    reg, _ = registry("container")
    facts = doctor.Facts(
        bridge_exists=True, bridge_addresses=[], bridge_mac_fixed=True, forwarding_on=True,
        table=None, sudoers=None,  # type: ignore[arg-type]
        sshd=None, subids={}, template_exists=True, configs={}, listeners={}, accounts={},  # type: ignore[arg-type]
        gpu=gpudevices.GpuHost(driver_version="550.54.14"),
        driver_versions={"alice": frozenset({"535.183.01"})},
    )  # fmt: skip
    [finding] = doctor.check_drivers(reg, None, facts)  # type: ignore[arg-type]
    assert not finding.ok
    assert finding.what == "alice: container alice has driver 535.183.01, the host 550.54.14"
    assert "`driver: host`" in finding.fix and "gpushell-admin apply" in finding.fix
    matching = dataclasses.replace(facts, driver_versions={"alice": frozenset({"550.54.14"})})
    assert doctor.check_drivers(reg, None, matching) == [  # type: ignore[arg-type]
        doctor.Finding(True, "alice: container alice has the host's NVIDIA driver 550.54.14", finding.fix)
    ]
    host_reg, _ = registry("host")
    assert doctor.check_drivers(host_reg, None, facts) == []  # type: ignore[arg-type]


def test_registry_driver_keys():
    from gpushell.core.registry import RegistryError, parse

    base = "hostname: gpu1\nusers:\n"
    assert (parse(base, "r").driver, parse(base, "r").driver_root) == ("host", "/")
    reg = parse("driver: container\ndriver_root: /srv/drv\n" + base, "r")
    assert (reg.driver, reg.driver_root) == ("container", "/srv/drv")
    with pytest.raises(RegistryError) as info:
        parse("driver: vm\n" + base, "r")
    assert "driver" in info.value.problems[0] and "host or container" in info.value.problems[0]
