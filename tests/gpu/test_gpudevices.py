"""GPU device nodes: discovery, which a container gets, its config, and doctor/apply on recorded hosts."""

from __future__ import annotations

import argparse
import os
import stat

import pytest

from gpushell.admin import apply, commands, doctor
from gpushell.containers.lxcconfig import container_config
from gpushell.core import registry
from gpushell.core.paths import Paths
from gpushell.gpu import gpudevices
from gpushell.gpu.gpudevices import GpuHost, Node

# /proc/devices of a host with driver 550 loaded (nvidia, nvidia-uvm, nvidia-modeset), trimmed.
PROC_DEVICES_550 = """\
Character devices:
  1 mem
  4 /dev/vc/0
  4 tty
  5 /dev/tty
  5 /dev/console
  5 /dev/ptmx
 10 misc
136 pts
195 nvidia-frontend
226 drm
234 nvidia-nvswitch
235 nvidia-nvlink
236 nvidia-caps
510 nvidia-uvm
511 aux

Block devices:
  7 loop
  8 sd
259 blkext
"""
# An older driver names major 195 plain "nvidia" and nvidia-uvm was not loaded yet.
PROC_DEVICES_OLD_NO_UVM = """\
Character devices:
  1 mem
195 nvidia
 10 misc

Block devices:
  8 sd
"""
# No NVIDIA driver at all (this machine).
PROC_DEVICES_NONE = "Character devices:\n  1 mem\n136 pts\n\nBlock devices:\n  8 sd\n 13 nvidia-uvm\n"

NV = [Node(f"nvidia{n}", 195, n) for n in range(4)]
CTL, MODESET = Node("nvidiactl", 195, 255), Node("nvidia-modeset", 195, 254)
UVM, UVM_TOOLS = Node("nvidia-uvm", 510, 0), Node("nvidia-uvm-tools", 510, 1)
ALL_NODES = (*NV, CTL, MODESET, UVM, UVM_TOOLS)


def test_char_majors_reads_only_character_devices() -> None:
    majors = gpudevices.char_majors(PROC_DEVICES_550)
    assert majors["nvidia-frontend"] == 195 and majors["nvidia-uvm"] == 510
    assert "loop" not in majors and "sd" not in majors
    assert "nvidia-uvm" not in gpudevices.char_majors(PROC_DEVICES_NONE)  # a block device of that name


@pytest.mark.parametrize(
    ("gpus", "names"),
    [
        ("none", []),
        ((2,), ["nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]),
        ((0, 3), ["nvidia0", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]),
        (
            "all",
            [f"nvidia{n}" for n in range(4)]
            + ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"],
        ),
        ((7,), []),  # GPU 7 is not on this host: no control nodes on their own either
    ],
)
def test_select(gpus: gpudevices.GpuSpec, names: list[str]) -> None:
    shuffled = tuple(reversed(ALL_NODES))
    assert [node.name for node in gpudevices.select(shuffled, gpus)] == names


def test_select_skips_control_nodes_that_are_absent() -> None:
    assert gpudevices.select((NV[0], CTL), (0,)) == (NV[0], CTL)


def test_config_binds_each_node_and_allows_exactly_its_numbers() -> None:
    reg = registry.parse(
        "gpu_devices: /srv/fake-dev\nusers:\n  ann:\n    port: 22001\n    ip: 10.0.3.2\n"
        "    idmap: 1000000\n    gpus: [1]\n",
        "/etc/gpushell.yaml",
    )
    user = reg.users["ann"]
    nodes = gpudevices.select(ALL_NODES, user.gpus)
    lines = container_config(reg, user, "/x/rootfs", gpu_nodes=nodes).splitlines()
    mounts = [line for line in lines if "nvidia" in line and "mount" in line]
    assert mounts == [
        f"lxc.mount.entry = /srv/fake-dev/{name} dev/{name} none bind,optional,create=file 0 0"
        for name in ("nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
    ]
    for version in ("cgroup", "cgroup2"):
        rules = [line.split(" = ")[1] for line in lines if line.startswith(f"lxc.{version}.devices.")]
        assert rules[0] == "a" and lines.index(f"lxc.{version}.devices.deny = a") >= 0
        assert rules[-5:] == ["c 195:1 rwm", "c 195:255 rwm", "c 510:0 rwm", "c 510:1 rwm", "c 195:254 rwm"]
        assert "c 195:0 rwm" not in rules
    # The deny comes after userns.conf, which empties LXC's own list.
    assert lines.index("lxc.include = /usr/share/lxc/config/userns.conf") < lines.index(
        "lxc.cgroup.devices.deny = a"
    )


def test_scan_finds_character_nodes_only(tmp_path: object) -> None:
    directory = str(tmp_path)
    # Regular files and links are not devices; making real nodes needs root (the integration test does).
    with open(os.path.join(directory, "nvidia0"), "w", encoding="ascii"):
        pass
    os.symlink("/dev/null", os.path.join(directory, "nvidiactl"))
    assert gpudevices.scan(directory) == ()
    if os.geteuid() == 0:
        os.mknod(os.path.join(directory, "nvidia3"), 0o600 | stat.S_IFCHR, os.makedev(195, 3))
        os.mknod(os.path.join(directory, "tty9"), 0o600 | stat.S_IFCHR, os.makedev(4, 9))
        assert gpudevices.scan(directory) == (Node("nvidia3", 195, 3),)
    assert gpudevices.scan(os.path.join(directory, "absent")) == ()


def host(
    proc: str, nodes: tuple[Node, ...], minors: tuple[int, ...] = (0, 1), modeset: bool = False
) -> GpuHost:
    return GpuHost("/dev", nodes, proc, minors, modeset)


def test_expected_nodes_follow_proc_devices() -> None:
    assert gpudevices.expected(host(PROC_DEVICES_550, (), modeset=True)) == (
        NV[0], NV[1], CTL, MODESET, UVM, UVM_TOOLS,
    )  # fmt: skip
    assert gpudevices.expected(host(PROC_DEVICES_OLD_NO_UVM, ())) == (NV[0], NV[1], CTL)
    assert gpudevices.expected(host(PROC_DEVICES_NONE, ())) == ()


def test_missing_uvm_is_found_and_nothing_else() -> None:
    present = (NV[0], NV[1], CTL)
    assert gpudevices.missing(host(PROC_DEVICES_550, present)) == (UVM, UVM_TOOLS)
    assert gpudevices.missing(host(PROC_DEVICES_OLD_NO_UVM, present)) == ()
    assert gpudevices.missing(host(PROC_DEVICES_NONE, ())) == ()
    assert gpudevices.after_repair(host(PROC_DEVICES_550, present)) == tuple(
        sorted((NV[0], NV[1], CTL, UVM, UVM_TOOLS))
    )


def test_a_node_with_stale_numbers_is_wrong() -> None:
    stale = Node("nvidia-uvm", 509, 0)
    found = gpudevices.wrong(host(PROC_DEVICES_550, (NV[0], NV[1], CTL, stale, UVM_TOOLS)))
    assert found == ((stale, UVM),)


PATHS = Paths()
REG = registry.parse(
    "lxcpath: /var/lib/lxc\nusers:\n  ann:\n    port: 22001\n    ip: 10.0.3.2\n    idmap: 1000000\n"
    "    gpus: all\n",
    "/etc/gpushell.yaml",
)


def doctor_facts(gpu: GpuHost) -> doctor.Facts:
    return doctor.Facts(
        bridge_exists=True, bridge_addresses=[], bridge_mac_fixed=True, forwarding_on=True,
        table=apply.NatTable(""),
        sudoers=doctor.InstalledFile(None), sshd=doctor.InstalledFile(None), subids={},
        template_exists=True, configs={}, listeners={}, accounts={}, gpu=gpu,
    )  # fmt: skip


def test_doctor_reports_a_missing_uvm_node_with_a_fix() -> None:
    lines = [
        f.line()
        for f in doctor.check_gpu_nodes(REG, PATHS, doctor_facts(host(PROC_DEVICES_550, (NV[0], NV[1], CTL))))
    ]
    assert lines == [
        "FAIL: /dev/nvidia-uvm is missing (the driver offers c 510:0) — fix: gpushell-admin apply "
        "(or: mknod -m 0666 /dev/nvidia-uvm c 510 0)",
        "FAIL: /dev/nvidia-uvm-tools is missing (the driver offers c 510:1) — fix: gpushell-admin apply "
        "(or: mknod -m 0666 /dev/nvidia-uvm-tools c 510 1)",
    ]


def test_doctor_is_quiet_without_a_driver_and_ok_with_every_node() -> None:
    assert doctor.check_gpu_nodes(REG, PATHS, doctor_facts(host(PROC_DEVICES_NONE, ()))) == []
    full = host(PROC_DEVICES_550, (NV[0], NV[1], CTL, UVM, UVM_TOOLS))
    assert [f.line() for f in doctor.check_gpu_nodes(REG, PATHS, doctor_facts(full))] == [
        "ok: NVIDIA device nodes in /dev match the loaded driver"
    ]


def test_apply_plans_the_missing_nodes_before_the_configs_that_bind_them() -> None:
    before = host(PROC_DEVICES_550, (NV[0], NV[1], CTL))
    old_config = apply.wanted_config(REG, REG.users["ann"], "generated", before.nodes)
    state = apply.HostState(
        table=apply.NatTable(""), bridge_ready=True, forwarding_on=True,
        configs={"ann": old_config}, accounts={"ann": apply.Account(PATHS.shell, True)},
        states={}, gpu=before,
    )  # fmt: skip
    changes = [c for c in apply.plan(REG, PATHS, state).changes if c.kind != apply.FORWARDS]
    assert [c.kind for c in changes] == [apply.GPU_NODES, apply.CONFIG]
    assert changes[0].text == "create missing NVIDIA device nodes /dev/nvidia-uvm, /dev/nvidia-uvm-tools"
    assert "lxc.cgroup.devices.allow = c 510:0 rwm" in changes[1].config
    repaired = state.replace(gpu=host(PROC_DEVICES_550, (NV[0], NV[1], CTL, UVM, UVM_TOOLS)),
                                   configs={"ann": changes[1].config})  # fmt: skip
    assert [c for c in apply.plan(REG, PATHS, repaired).changes if c.kind != apply.FORWARDS] == []


def test_make_node_needs_root_and_reports_failure(tmp_path: object) -> None:
    if os.geteuid() == 0:
        gpudevices.make_node(str(tmp_path), Node("nvidia-uvm", 510, 0))
        info = os.lstat(os.path.join(str(tmp_path), "nvidia-uvm"))
        assert stat.S_ISCHR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666
        assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (510, 0)
    with pytest.raises(gpudevices.GpushellError, match="cannot create"):
        gpudevices.make_node(os.path.join(str(tmp_path), "absent"), Node("nvidia-uvm", 510, 0))


@pytest.mark.parametrize(
    ("text", "value"), [("all", "all"), ("none", "none"), ("0", [0]), ("2,0", [0, 2]), ("0, 3", [0, 3])]
)
def test_gpus_option(text: str, value: object) -> None:
    assert commands.gpus_option(text) == value
    args = commands.build_parser().parse_args(["add", "bob", "--gpus", text])
    assert args.gpus == value


@pytest.mark.parametrize("text", ["", "some", "0,0", "1;2", "-1", "0,"])
def test_gpus_option_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        commands.gpus_option(text)


def test_gpu_devices_setting() -> None:
    assert registry.parse("users:\n", "/r").gpu_devices == "/dev"
    assert registry.parse("gpu_devices: /run/x\n", "/r").gpu_devices == "/run/x"
    with pytest.raises(registry.RegistryError, match="gpu_devices"):
        registry.parse("gpu_devices: dev\n", "/r")


def test_gpu_node_names() -> None:
    assert Node("nvidia12", 195, 12).gpu == 12 and Node("nvidiactl", 195, 255).gpu is None
    assert Node("nvidia", 195, 0).gpu is None
    assert Node("nvidia\u0663", 195, 3).gpu is None  # an Arabic-Indic three: no device is named so
    assert gpudevices.is_nvidia_name("nvidia0") and gpudevices.is_nvidia_name("nvidia-uvm-tools")
    assert not gpudevices.is_nvidia_name("nvidia-foo") and not gpudevices.is_nvidia_name("nvidia1a")
