"""NVIDIA device nodes: which exist, which a container gets, which are missing.

The decisions (`select`, `expected`, `missing`, `cgroup_rules`) are pure;
`scan` and `read_host` read a device directory and /proc, and `make_node`
creates one node.  The device directory is a registry setting
(`gpu_devices`, default /dev) so the tests can point it at stand-in nodes.

The nodes' numbers come from the nodes themselves (their st_rdev), so a
container's devices-cgroup rule always matches the node bind-mounted into
it.  /proc/devices is only consulted to decide which nodes should exist.
"""

from __future__ import annotations

import os
import re
import stat

from ..core.errors import GpushellError
from ..core.model import GpuSpec
from ..core.value import Value

NVIDIA_MAJOR = 195  # fixed by the driver ("nvidia-frontend" or "nvidia" in /proc/devices)
CTL_MINOR, MODESET_MINOR = 255, 254
# Nodes every GPU container gets besides its /dev/nvidiaN, when they exist.
SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
GPU_NODE = re.compile(r"nvidia([0-9]+)")  # a GPU's own node, nvidiaN


class Node(Value):
    __slots__ = ("major", "minor", "name")

    def __init__(self, name: str, major: int, minor: int) -> None:
        self.name = name  # relative to the device directory: "nvidia0", "nvidia-uvm"
        self.major, self.minor = major, minor

    def __lt__(self, other: Node) -> bool:
        return (self.name, self.major, self.minor) < (other.name, other.major, other.minor)

    @property
    def gpu(self) -> int | None:
        """The GPU number for /dev/nvidiaN, None for the shared nodes."""
        match = GPU_NODE.fullmatch(self.name)
        return int(match[1]) if match else None

    def rule(self) -> str:
        return f"c {self.major}:{self.minor} rwm"


class GpuHost(Value):
    """What the host has: nodes in the device directory and what the kernel offers."""

    __slots__ = ("dev_dir", "driver_version", "gpu_minors", "modeset_loaded", "nodes", "proc_devices")

    def __init__(
        self,
        dev_dir: str = "/dev",
        nodes: tuple[Node, ...] = (),
        proc_devices: str = "",  # /proc/devices
        gpu_minors: tuple[int, ...] = (),  # from /proc/driver/nvidia/gpus/*/information
        modeset_loaded: bool = False,  # /sys/module/nvidia_modeset exists
        driver_version: str | None = None,  # driverfiles.read_version, under the registry's driver_root
    ) -> None:
        self.dev_dir, self.nodes, self.proc_devices = dev_dir, nodes, proc_devices
        self.gpu_minors, self.modeset_loaded, self.driver_version = gpu_minors, modeset_loaded, driver_version


NO_DRIVER = GpuHost()  # a host without NVIDIA nodes or driver


# --- pure --------------------------------------------------------------------


def char_majors(proc_devices: str) -> dict[str, int]:
    """Name -> major of the character devices in /proc/devices text."""
    majors: dict[str, int] = {}
    in_char = False
    for line in proc_devices.splitlines():
        if line.strip().endswith("devices:"):
            in_char = line.strip() == "Character devices:"
            continue
        words = line.split()
        if in_char and len(words) == 2 and words[0].isdigit():
            majors.setdefault(words[1], int(words[0]))
    return majors


def is_nvidia_name(name: str) -> bool:
    return name in SHARED_NODES or GPU_NODE.fullmatch(name) is not None


def select(nodes: tuple[Node, ...], gpus: GpuSpec) -> tuple[Node, ...]:
    """The nodes a container with `gpus` gets: its /dev/nvidiaN and the shared nodes.

    `none` gets nothing; `all` every /dev/nvidiaN present; a list only the
    listed GPUs that are present (a missing one is doctor's business).
    """
    if gpus == "none":
        return ()
    wanted = None if gpus == "all" else set(gpus)
    chosen = [
        node
        for node in nodes
        if (node.gpu is None and node.name in SHARED_NODES)
        or (node.gpu is not None and (wanted is None or node.gpu in wanted))
    ]
    if not any(node.gpu is not None for node in chosen):
        return ()  # no GPU of its own: the control nodes alone are of no use
    return tuple(sorted(chosen, key=_order))


def _order(node: Node) -> tuple[int, int, str]:
    return (0, node.gpu, "") if node.gpu is not None else (1, SHARED_NODES.index(node.name), node.name)


def expected(host: GpuHost) -> tuple[Node, ...]:
    """The nodes the loaded driver modules call for (what nvidia-modprobe would make)."""
    majors = char_majors(host.proc_devices)
    frontend = majors.get("nvidia-frontend", majors.get("nvidia"))
    nodes: list[Node] = []
    if frontend is not None:
        nodes += [Node(f"nvidia{minor}", frontend, minor) for minor in sorted(host.gpu_minors)]
        nodes.append(Node("nvidiactl", frontend, CTL_MINOR))
        if host.modeset_loaded:
            nodes.append(Node("nvidia-modeset", frontend, MODESET_MINOR))
    uvm = majors.get("nvidia-uvm")
    if uvm is not None:
        nodes += [Node("nvidia-uvm", uvm, 0), Node("nvidia-uvm-tools", uvm, 1)]
    return tuple(nodes)


def missing(host: GpuHost) -> tuple[Node, ...]:
    """Expected nodes that are absent from the device directory."""
    present = {node.name for node in host.nodes}
    return tuple(node for node in expected(host) if node.name not in present)


def wrong(host: GpuHost) -> tuple[tuple[Node, Node], ...]:
    """(present, expected) pairs whose numbers differ: a stale node from another driver load."""
    present = {node.name: node for node in host.nodes}
    return tuple(
        (present[node.name], node)
        for node in expected(host)
        if node.name in present and present[node.name] != node
    )


def after_repair(host: GpuHost) -> tuple[Node, ...]:
    """The nodes there will be once `apply` made the missing ones."""
    return tuple(sorted(host.nodes + missing(host)))


def mknod_command(dev_dir: str, node: Node) -> str:
    path = os.path.join(dev_dir, node.name)
    return f"mknod -m 0666 {path} c {node.major} {node.minor}"


# --- reading and changing the host ---------------------------------------------


def scan(dev_dir: str) -> tuple[Node, ...]:
    """The NVIDIA character device nodes in dev_dir (not following links)."""
    try:
        names = os.listdir(dev_dir)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise GpushellError(f"cannot list {dev_dir}: {exc.strerror}") from None
    nodes = []
    for name in names:
        if not is_nvidia_name(name):
            continue
        try:
            info = os.lstat(os.path.join(dev_dir, name))
        except OSError:
            continue
        if stat.S_ISCHR(info.st_mode):
            nodes.append(Node(name, os.major(info.st_rdev), os.minor(info.st_rdev)))
    return tuple(sorted(nodes))


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read()
    except OSError:
        return ""


def gpu_minors(proc_gpus: str = "/proc/driver/nvidia/gpus") -> tuple[int, ...]:
    """Each GPU's device minor, from the driver's `Device Minor: N` lines."""
    try:
        entries = os.listdir(proc_gpus)
    except OSError:
        return ()
    minors = []
    for entry in entries:
        for line in _read(os.path.join(proc_gpus, entry, "information")).splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Device Minor" and value.strip().isdigit():
                minors.append(int(value))
    return tuple(sorted(minors))


def read_host(dev_dir: str, driver_root: str = "/") -> GpuHost:
    from . import driverfiles

    return GpuHost(
        driver_version=driverfiles.read_version(driver_root),
        dev_dir=dev_dir,
        nodes=scan(dev_dir),
        proc_devices=_read("/proc/devices"),
        gpu_minors=gpu_minors(),
        modeset_loaded=os.path.isdir("/sys/module/nvidia_modeset"),
    )


def make_node(dev_dir: str, node: Node) -> None:
    """Create one node, mode 0666 like nvidia-modprobe makes them."""
    path = os.path.join(dev_dir, node.name)
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(node.major, node.minor))
        os.chmod(path, 0o666)  # whatever the umask took away
    except OSError as exc:
        raise GpushellError(f"cannot create {path}: {exc.strerror}") from None
